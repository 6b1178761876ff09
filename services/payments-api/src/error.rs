//! The one JSON error shape every failure answers with:
//!
//! ```json
//! {"StatusCode": 400, "Status": "Bad Request", "Message": "the request has invalid fields",
//!  "Errors": [{"Field": "amount", "Message": "must be greater than zero"}]}
//! ```

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::auth::AuthError;
use crate::http::views::DisputeView;

/// One problem with one part of the request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct FieldError {
    /// The request field (`amount`, `userId`), query parameter, header or `body`.
    #[serde(rename = "Field")]
    pub field: String,
    #[serde(rename = "Message")]
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

/// The error body.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    #[serde(rename = "StatusCode")]
    pub status_code: u16,
    #[serde(rename = "Status")]
    pub status: String,
    #[serde(rename = "Message")]
    pub message: String,
    #[serde(rename = "Errors")]
    pub errors: Vec<FieldError>,
    /// On 409 for a status transition: the payment's status now.
    #[serde(rename = "CurrentStatus", skip_serializing_if = "Option::is_none")]
    pub current_status: Option<String>,
    /// On 409 for a second dispute: the payment's existing dispute.
    #[serde(rename = "Dispute", skip_serializing_if = "Option::is_none")]
    pub dispute: Option<DisputeView>,
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
    #[error("{message}")]
    Conflict {
        message: String,
        current_status: Option<String>,
    },
    /// A second dispute: the body carries the first, which stands.
    #[error("payment is already disputed")]
    AlreadyDisputed(Box<DisputeView>),
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
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Validation(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::Conflict { .. } | Self::AlreadyDisputed(_) => StatusCode::CONFLICT,
            Self::IdempotencyMismatch => StatusCode::UNPROCESSABLE_ENTITY,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn validation(field: &str, message: impl Into<String>) -> Self {
        Self::Validation(vec![FieldError::new(field, message)])
    }

    pub fn payment_not_found() -> Self {
        Self::NotFound("payment not found".into())
    }

    pub fn body(&self) -> ErrorBody {
        let status = self.status();
        let (errors, current_status) = match self {
            Self::Validation(errors) => (errors.clone(), None),
            Self::Conflict { current_status, .. } => (Vec::new(), current_status.clone()),
            _ => (Vec::new(), None),
        };
        let dispute = match self {
            Self::AlreadyDisputed(dispute) => Some(dispute.as_ref().clone()),
            _ => None,
        };
        ErrorBody {
            status_code: status.as_u16(),
            status: status.canonical_reason().unwrap_or("Error").to_owned(),
            message: self.to_string(),
            errors,
            current_status,
            dispute,
        }
    }
}

impl From<sqlx::Error> for ApiError {
    /// Losing the database (refused, reset, half-open handshakes, pool exhausted) is a
    /// temporary condition the client may retry: 503 with Retry-After. Only errors that
    /// mean a bug in this program (a query or a type the database rejects) are a 500, logged
    /// here and reported without details.
    fn from(error: sqlx::Error) -> Self {
        let is_bug = match &error {
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
        let mut response = (status, axum::Json(self.body())).into_response();
        let headers = response.headers_mut();
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
    fn body_has_the_documented_shape() {
        let body = ApiError::validation("amount", "must be greater than zero").body();
        let json = serde_json::to_value(&body).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "StatusCode": 400, "Status": "Bad Request",
                "Message": "the request has invalid fields",
                "Errors": [{"Field": "amount", "Message": "must be greater than zero"}]
            })
        );
        let conflict = ApiError::Conflict {
            message: "payment is declined".into(),
            current_status: Some("declined".into()),
        };
        let json = serde_json::to_value(conflict.body()).unwrap();
        assert_eq!(json["StatusCode"], 409);
        assert_eq!(json["CurrentStatus"], "declined");
    }
}
