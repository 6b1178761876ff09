//! The API's one error type, [`ApiError`], and the body every failure answers with: RFC 9457
//! problem details, `Content-Type: application/problem+json`.
//!
//! ```json
//! {"type": "urn:paysys:problem:invalid_request", "code": "invalid_request",
//!  "title": "The request has invalid fields", "status": 400,
//!  "detail": "the request has invalid fields", "requestId": "0193a0c2-...",
//!  "errors": [{"field": "amount", "message": "must be greater than zero"}]}
//! ```
//!
//! `code` is stable (clients branch on it) and `type` is the same as a URI; `title` describes
//! the code, `detail` this occurrence; `requestId` is the request's `X-Request-Id`. Some codes
//! add members: `errors` (every invalid field), `currentStatus` (a transition refused),
//! `dispute` (the existing one), `amountLeft`/`amountLeftMinor` (a refund above what is left).
//!
//! Every variant's status, code and title are in one `match` ([`ApiError::kind`]); a new error
//! is a variant there, with its row in the README's table of codes.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use paysys_core::{Money, PaymentStatus};
use rust_decimal::Decimal;
use serde::Serialize;
use utoipa::ToSchema;

use crate::auth::AuthError;
use crate::http::request_id;
use crate::http::views::DisputeView;

/// The media type of every error body.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// One problem with one part of the request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct FieldError {
    /// The request field (`amount`, `userId`), query parameter, header or `body`.
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: &str, message: impl Into<String>) -> Self {
        Self {
            field: field.to_owned(),
            message: message.into(),
        }
    }
}

/// An error: RFC 9457 problem details.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Problem {
    /// `urn:paysys:problem:<code>`.
    #[serde(rename = "type")]
    #[schema(example = "urn:paysys:problem:invalid_request")]
    pub problem_type: String,
    /// The stable code of the problem (the README lists them).
    #[schema(example = "invalid_request")]
    pub code: String,
    /// What the code means, the same for every occurrence.
    pub title: String,
    /// The HTTP status code.
    #[schema(example = 400)]
    pub status: u16,
    /// What happened this time.
    pub detail: String,
    /// The request's `X-Request-Id`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// `invalid_request`: every invalid field.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
    /// `invalid_status`, `refund_exceeds_amount_left`: the payment's status now.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub current_status: Option<PaymentStatus>,
    /// `already_disputed`: the payment's existing dispute.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dispute: Option<DisputeView>,
    /// `refund_exceeds_amount_left`: what is left to refund, in major units.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "optional_json_number"
    )]
    #[schema(value_type = Option<f64>, example = 50)]
    pub amount_left: Option<Decimal>,
    /// `refund_exceeds_amount_left`: the same in minor units.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub amount_left_minor: Option<i64>,
}

fn optional_json_number<S: serde::Serializer>(
    value: &Option<Decimal>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match value {
        Some(value) => paysys_core::money::json_number::serialize(value, serializer),
        None => serializer.serialize_none(),
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiError {
    #[error("the request has invalid fields")]
    Validation(Vec<FieldError>),
    #[error("{0}")]
    Unauthorized(AuthError),
    #[error("{0}")]
    NotFound(String),
    #[error("method not allowed on this route")]
    MethodNotAllowed,
    /// The status machine does not allow the change from `current`.
    #[error("{message}")]
    InvalidStatus {
        message: String,
        current: PaymentStatus,
    },
    /// A refund of more than is left to refund.
    #[error(
        "the refund of {} {code} exceeds the {} {code} left to refund",
        requested.to_decimal(),
        left.to_decimal(),
        code = left.currency.code()
    )]
    RefundExceedsAmountLeft {
        requested: Money,
        left: Money,
        current: PaymentStatus,
    },
    /// A second dispute: the body carries the first, which stands.
    #[error("payment is already disputed")]
    AlreadyDisputed(Box<DisputeView>),
    #[error("a request with this Idempotency-Key is still in progress; retry later")]
    IdempotencyKeyInUse,
    #[error("this Idempotency-Key was already used with a different request")]
    IdempotencyMismatch,
    #[error("body exceeds the {0}-byte limit")]
    PayloadTooLarge(usize),
    #[error("Content-Type must be application/json")]
    UnsupportedMediaType,
    #[error("too many requests")]
    TooManyRequests { retry_after_secs: u64 },
    #[error("{message}")]
    Unavailable {
        message: String,
        retry_after_secs: u64,
    },
    #[error("internal error")]
    Internal,
}

impl ApiError {
    /// The HTTP status, the stable code and its title: one row per variant.
    pub fn kind(&self) -> (StatusCode, &'static str, &'static str) {
        match self {
            Self::Validation(_) => (
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "The request has invalid fields",
            ),
            Self::Unauthorized(_) => (
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "Missing or invalid credentials",
            ),
            Self::NotFound(_) => (StatusCode::NOT_FOUND, "not_found", "Not found"),
            Self::MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "Method not allowed on this route",
            ),
            Self::InvalidStatus { .. } => (
                StatusCode::CONFLICT,
                "invalid_status",
                "The payment's status does not allow this",
            ),
            Self::RefundExceedsAmountLeft { .. } => (
                StatusCode::CONFLICT,
                "refund_exceeds_amount_left",
                "The refund exceeds what is left to refund",
            ),
            Self::AlreadyDisputed(_) => (
                StatusCode::CONFLICT,
                "already_disputed",
                "The payment is already disputed",
            ),
            Self::IdempotencyKeyInUse => (
                StatusCode::CONFLICT,
                "idempotency_key_in_use",
                "A request with this Idempotency-Key is in progress",
            ),
            Self::IdempotencyMismatch => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency_key_reused",
                "The Idempotency-Key was used with a different request",
            ),
            Self::PayloadTooLarge(_) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "The body is too large",
            ),
            Self::UnsupportedMediaType => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "The body must be application/json",
            ),
            Self::TooManyRequests { .. } => (
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "Too many requests",
            ),
            Self::Unavailable { .. } => (
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "Temporarily unavailable",
            ),
            Self::Internal => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "Internal error",
            ),
        }
    }

    pub fn status(&self) -> StatusCode {
        self.kind().0
    }

    pub fn validation(field: &str, message: impl Into<String>) -> Self {
        Self::Validation(vec![FieldError::new(field, message)])
    }

    pub fn payment_not_found() -> Self {
        Self::NotFound("payment not found".into())
    }

    /// The problem details of this error, with the current request's id.
    pub fn body(&self) -> Problem {
        let (status, code, title) = self.kind();
        let mut problem = Problem {
            problem_type: format!("urn:paysys:problem:{code}"),
            code: code.to_owned(),
            title: title.to_owned(),
            status: status.as_u16(),
            detail: self.to_string(),
            request_id: request_id::current(),
            errors: Vec::new(),
            current_status: None,
            dispute: None,
            amount_left: None,
            amount_left_minor: None,
        };
        match self {
            Self::Validation(errors) => problem.errors = errors.clone(),
            Self::InvalidStatus { current, .. } => problem.current_status = Some(*current),
            Self::RefundExceedsAmountLeft { left, current, .. } => {
                problem.current_status = Some(*current);
                problem.amount_left = Some(left.to_decimal());
                problem.amount_left_minor = Some(left.minor);
            }
            Self::AlreadyDisputed(dispute) => problem.dispute = Some(dispute.as_ref().clone()),
            _ => {}
        }
        problem
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(error: sqlx::Error) -> Self {
        Self::from_database(&error)
    }
}

impl ApiError {
    /// Losing the database (refused, reset, half-open handshakes, pool exhausted) is a
    /// temporary condition the client may retry: 503 with Retry-After. Only errors that
    /// mean a bug in this program (a query or a type the database rejects) are a 500, logged
    /// here and reported without details. Logged where the request is handled (inside its
    /// span), so that the line carries the request's id.
    pub fn from_database(error: &sqlx::Error) -> Self {
        let is_bug = match error {
            sqlx::Error::Database(db) => !db.code().is_some_and(|code| {
                code.starts_with("08") || code.starts_with("57P") || code == "53300"
            }),
            sqlx::Error::RowNotFound
            | sqlx::Error::TypeNotFound { .. }
            | sqlx::Error::ColumnIndexOutOfBounds { .. }
            | sqlx::Error::ColumnNotFound(_)
            | sqlx::Error::ColumnDecode { .. }
            | sqlx::Error::Encode(_)
            | sqlx::Error::Decode(_)
            | sqlx::Error::Configuration(_)
            | sqlx::Error::Migrate(_) => true,
            _ => false,
        };
        if is_bug {
            tracing::error!(%error, "database error");
            return Self::Internal;
        }
        tracing::warn!(%error, "database unavailable");
        Self::Unavailable {
            message: "the database is unavailable; retry shortly".into(),
            retry_after_secs: 1,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = serde_json::to_vec(&self.body()).expect("problems serialise");
        let mut response = (status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        match &self {
            Self::Unauthorized(_) => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            Self::Unavailable {
                retry_after_secs, ..
            }
            | Self::TooManyRequests { retry_after_secs } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_secs));
            }
            _ => {}
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_is_a_problem_with_its_extensions() {
        let body = ApiError::validation("amount", "must be greater than zero").body();
        let json = serde_json::to_value(&body).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "type": "urn:paysys:problem:invalid_request", "code": "invalid_request",
                "title": "The request has invalid fields", "status": 400,
                "detail": "the request has invalid fields",
                "errors": [{"field": "amount", "message": "must be greater than zero"}]
            })
        );
        let conflict = ApiError::InvalidStatus {
            message: "payment is declined".into(),
            current: PaymentStatus::Declined,
        };
        let json = serde_json::to_value(conflict.body()).unwrap();
        assert_eq!(json["status"], 409);
        assert_eq!(json["code"], "invalid_status");
        assert_eq!(json["currentStatus"], "declined");
        let usd = |minor| Money {
            minor,
            currency: "USD".parse().unwrap(),
        };
        let refund = ApiError::RefundExceedsAmountLeft {
            requested: usd(6000),
            left: usd(5050),
            current: PaymentStatus::PartiallyRefunded,
        };
        let json = serde_json::to_string(&refund.body()).unwrap();
        assert!(
            json.contains(r#""amountLeft":50.5,"amountLeftMinor":5050"#),
            "{json}"
        );
        assert!(
            json.contains("the refund of 60 USD exceeds the 50.5 USD left to refund"),
            "{json}"
        );
    }

    /// Codes are the contract clients branch on: one per variant, and each in the README.
    #[test]
    fn every_code_is_distinct_and_documented() {
        let dispute = DisputeView {
            reason: paysys_core::DisputeReason::Other,
            note: None,
            disputed_at: chrono::Utc::now(),
        };
        let usd = Money {
            minor: 1,
            currency: "USD".parse().unwrap(),
        };
        let every = [
            ApiError::Validation(Vec::new()),
            ApiError::Unauthorized(AuthError::Missing),
            ApiError::NotFound(String::new()),
            ApiError::MethodNotAllowed,
            ApiError::InvalidStatus {
                message: String::new(),
                current: PaymentStatus::Pending,
            },
            ApiError::RefundExceedsAmountLeft {
                requested: usd,
                left: usd,
                current: PaymentStatus::Captured,
            },
            ApiError::AlreadyDisputed(Box::new(dispute)),
            ApiError::IdempotencyKeyInUse,
            ApiError::IdempotencyMismatch,
            ApiError::PayloadTooLarge(1),
            ApiError::UnsupportedMediaType,
            ApiError::TooManyRequests {
                retry_after_secs: 1,
            },
            ApiError::Unavailable {
                message: String::new(),
                retry_after_secs: 1,
            },
            ApiError::Internal,
        ];
        let readme = include_str!("../../../README.md");
        let mut codes = std::collections::BTreeSet::new();
        for error in &every {
            let (_, code, _) = error.kind();
            assert!(codes.insert(code), "{code} twice");
            assert!(
                readme.contains(&format!("| `{code}` |")),
                "README lacks {code}"
            );
        }
    }
}
