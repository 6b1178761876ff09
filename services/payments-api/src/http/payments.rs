//! The payments routes.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::{Extension, Json};
use base64::Engine;
use paysys_core::PaymentStatus;
use uuid::Uuid;

use crate::error::{ApiError, FieldError, Problem};
use crate::http::extract::{Caller, IdempotencyKey, JsonBody};
use crate::http::idempotent::{self, Reply};
use crate::http::views::{DisputeView, PaymentChanged, PaymentPage, PaymentSummary, PaymentView};
use crate::http::{AppState, Version};
use crate::metrics::ReasonLabels;
use crate::store::disputes::{self, Disputed};
use crate::store::payments::{self, Insert, ListQuery};
use crate::store::refunds;
use crate::validation::{
    CreatePaymentRequest, DisputeRequest, NewDispute, parse_new_payment, read,
};

const DEFAULT_PAGE: i64 = 10;
const MAX_PAGE: i64 = 100;

/// Create a payment.
///
/// `201` means the payment is committed to PostgreSQL and will be handed to the risk engine,
/// even if RabbitMQ is down at that moment.
#[utoipa::path(
    post, path = "/payments", tag = "payments",
    request_body = CreatePaymentRequest,
    params(("Idempotency-Key" = Option<String>, Header, pattern = "^[!-~]{1,255}$", description = "Retries with the same key replay the first response (kept at least 24 h)")),
    responses(
        (status = 201, description = "Payment accepted; `Location` is its URL", body = PaymentSummary,
            headers(("Location" = String, description = "The payment's URL, `/v1/payments/{id}`"))),
        (status = 400, description = "Invalid fields, all of them listed", body = Problem),
        (status = 401, description = "Missing or invalid credentials", body = Problem),
        (status = 409, description = "The Idempotency-Key is in use by a request still in progress", body = Problem),
        (status = 413, description = "Body too large", body = Problem),
        (status = 415, description = "Content-Type is not application/json", body = Problem),
        (status = 422, description = "The Idempotency-Key was used with a different request", body = Problem),
        (status = 503, description = "Database unavailable, or too many payments waiting for a risk decision (MAX_UNDECIDED); retry after the Retry-After delay", body = Problem),
    ),
    security(("api_key" = []), ("bearer" = []))
)]
pub async fn create(
    State(app): State<AppState>,
    Extension(version): Extension<Version>,
    Caller(principal): Caller,
    IdempotencyKey(key): IdempotencyKey,
    JsonBody(body): JsonBody<true>,
) -> Result<Response, ApiError> {
    let payment = parse_new_payment(&body, app.limits.max_amount).map_err(ApiError::Validation)?;
    // Bounded time to a decision: refuse rather than queue behind a decision path that
    // cannot keep up (a keyed retry refused here runs afresh later, nothing is stored).
    app.backlog.admit()?;
    let id = Uuid::now_v7();
    let created = match version {
        Version::V1 => Reply::json(
            StatusCode::CREATED,
            &PaymentSummary {
                id,
                status: PaymentStatus::Pending,
            },
        ),
        // The original demo's body, exactly.
        Version::Unversioned => Reply::json(
            StatusCode::CREATED,
            &PaymentChanged::new(StatusCode::CREATED, id, PaymentStatus::Pending),
        ),
    };
    let insert = Insert {
        id,
        principal: principal.0.clone(),
        payment,
    };
    let response = match key {
        // The common case goes through group commit.
        None => {
            app.writer.insert(insert).await?;
            created.into_response(false)
        }
        // A keyed request stores its response in the same transaction as the payment.
        Some(key) => {
            let path = format!("{}/payments", version.prefix());
            let hash = idempotent::request_hash("POST", &path, &body);
            let window = app.velocity_window;
            idempotent::run(&app, &principal, Some(key), hash, move |conn| {
                Box::pin(async move {
                    payments::insert_many(conn, std::slice::from_ref(&insert), window).await?;
                    Ok(created)
                })
            })
            .await?
        }
    };
    if response.status() == StatusCode::CREATED {
        app.metrics.payments_created.inc();
        // Committed: let the relay publish it now rather than at its next poll.
        app.relay_wake.notify_one();
    }
    // The id is the body's (a replay's is the first request's).
    let response = idempotent::with_location(response, |body| {
        let id = body.get("id").or_else(|| body.get("PaymentId"))?.as_str()?;
        Some(format!("/v1/payments/{id}"))
    })
    .await;
    Ok(response)
}

/// Get one payment with its decision, refunds and audit trail.
#[utoipa::path(
    get, path = "/payments/{id}", tag = "payments",
    params(("id" = Uuid, Path, description = "Payment id")),
    responses(
        (status = 200, description = "The payment", body = PaymentView),
        (status = 400, description = "The id is not a UUID", body = Problem),
        (status = 401, description = "Missing or invalid credentials", body = Problem),
        (status = 404, description = "No such payment for this caller", body = Problem),
    ),
    security(("api_key" = []), ("bearer" = []))
)]
pub async fn get_one(
    State(app): State<AppState>,
    Caller(principal): Caller,
    Path(id): Path<String>,
) -> Result<Json<PaymentView>, ApiError> {
    let id = parse_id(&id)?;
    let mut conn = app.pool.acquire().await?;
    let record = payments::find(&mut conn, &principal.0, id)
        .await?
        .ok_or_else(ApiError::payment_not_found)?;
    let history = payments::history(&mut conn, id).await?;
    let refunds = refunds::list(&mut conn, id).await?;
    Ok(Json(PaymentView::from_record(
        record,
        Some(history),
        Some(refunds),
    )))
}

/// List the caller's payments, newest first.
#[utoipa::path(
    get, path = "/payments", tag = "payments",
    params(
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 100, description = "1 to 100, default 10"),
        ("cursor" = Option<String>, Query, description = "`nextCursor` of the previous page"),
        ("status" = Option<PaymentStatus>, Query, description = "Only payments in this status"),
        ("userId" = Option<Uuid>, Query, description = "Only payments of this payer"),
    ),
    responses(
        (status = 200, description = "A page of payments", body = PaymentPage),
        (status = 400, description = "Invalid query parameters", body = Problem),
        (status = 401, description = "Missing or invalid credentials", body = Problem),
    ),
    security(("api_key" = []), ("bearer" = []))
)]
pub async fn list(
    State(app): State<AppState>,
    Caller(principal): Caller,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Json<PaymentPage>, ApiError> {
    let Query(pairs) = query.map_err(|e| ApiError::validation("query", e.body_text()))?;
    let query = parse_list_query(&pairs).map_err(ApiError::Validation)?;
    let mut conn = app.pool.acquire().await?;
    let (rows, has_more) = payments::list(&mut conn, &principal.0, &query).await?;
    let next_cursor = match rows.last() {
        Some(last) if has_more => Some(encode_cursor(last.id)),
        _ => None,
    };
    Ok(Json(PaymentPage {
        data: rows
            .into_iter()
            .map(|record| PaymentView::from_record(record, None, None))
            .collect(),
        has_more,
        next_cursor,
    }))
}

/// Record a dispute of a payment: a chargeback or fraud report from the payer's bank.
///
/// Only a payment that was approved (whatever became of it later) can be disputed, and only
/// once. A dispute is an outcome the risk model learns from, not a state: the payment's
/// status does not change. It appears in `GET /payments/{id}` and in its audit trail.
#[utoipa::path(
    post, path = "/payments/{id}/disputes", tag = "payments",
    params(
        ("id" = Uuid, Path, description = "Payment id"),
        ("Idempotency-Key" = Option<String>, Header, pattern = "^[!-~]{1,255}$", description = "Retries with the same key replay the first response"),
    ),
    request_body = DisputeRequest,
    responses(
        (status = 201, description = "Dispute recorded; `Location` is the payment's URL, which shows it", body = DisputeView,
            headers(("Location" = String, description = "`/v1/payments/{id}`"))),
        (status = 400, description = "Bad id or body; a bad reason names the allowed values", body = Problem),
        (status = 401, description = "Missing or invalid credentials", body = Problem),
        (status = 404, description = "No such payment for this caller", body = Problem),
        (status = 409, description = "Never approved (CurrentStatus says what it is), already disputed (Dispute is the existing one), or the Idempotency-Key is in flight", body = Problem),
        (status = 413, description = "Body too large", body = Problem),
        (status = 415, description = "Content-Type is not application/json", body = Problem),
        (status = 422, description = "The Idempotency-Key was used with a different request", body = Problem),
    ),
    security(("api_key" = []), ("bearer" = []))
)]
pub async fn dispute(
    State(app): State<AppState>,
    Extension(version): Extension<Version>,
    Caller(principal): Caller,
    IdempotencyKey(key): IdempotencyKey,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<true>,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    let NewDispute { reason, note } = read::<DisputeRequest>(&body)
        .and_then(|(request, errors)| request.validate(errors))
        .map_err(ApiError::Validation)?;
    let path = format!("{}/payments/{id}/disputes", version.prefix());
    let hash = idempotent::request_hash("POST", &path, &body);
    let owner = principal.0.clone();
    let response = idempotent::run(&app, &principal, key, hash, move |conn| {
        Box::pin(async move {
            match disputes::record(conn, &owner, id, reason, note.as_deref()).await? {
                Disputed::Recorded(dispute) => Ok(Reply::json(
                    StatusCode::CREATED,
                    &DisputeView::from(dispute),
                )),
                Disputed::AlreadyDisputed(existing) => Err(ApiError::AlreadyDisputed(Box::new(
                    DisputeView::from(existing),
                ))),
                Disputed::NeverApproved { current } => Err(ApiError::InvalidStatus {
                    message: format!(
                        "payment is {current} and was never approved; only a payment that was approved can be disputed"
                    ),
                    current,
                }),
                Disputed::NotFound => Err(ApiError::payment_not_found()),
            }
        })
    })
    .await?;
    // Counted when recorded, not when replayed.
    if response.status() == StatusCode::CREATED
        && !response.headers().contains_key("idempotent-replayed")
    {
        app.metrics
            .disputes
            .get_or_create(&ReasonLabels {
                reason: reason.as_str().to_owned(),
            })
            .inc();
    }
    // The dispute is part of the payment.
    let response =
        idempotent::with_location(response, |_| Some(format!("/v1/payments/{id}"))).await;
    Ok(response)
}

pub(crate) fn parse_id(id: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(id).map_err(|_| ApiError::validation("id", "must be a UUID"))
}

fn parse_list_query(pairs: &[(String, String)]) -> Result<ListQuery, Vec<FieldError>> {
    let mut query = ListQuery {
        limit: DEFAULT_PAGE,
        ..Default::default()
    };
    let mut errors = Vec::new();
    for (name, value) in pairs {
        let result = match name.as_str() {
            "limit" => value
                .parse::<i64>()
                .ok()
                .filter(|limit| (1..=MAX_PAGE).contains(limit))
                .map(|limit| query.limit = limit)
                .ok_or_else(|| format!("must be an integer from 1 to {MAX_PAGE}")),
            "cursor" => decode_cursor(value)
                .map(|id| query.before = Some(id))
                .ok_or_else(|| "is not a cursor returned by this API".to_owned()),
            "status" => value
                .parse::<PaymentStatus>()
                .map(|status| query.status = Some(status))
                .map_err(|e| e.to_string()),
            "userId" => Uuid::parse_str(value)
                .map(|user| query.user_id = Some(user))
                .map_err(|_| "must be a UUID".to_owned()),
            _ => Err("unknown query parameter".to_owned()),
        };
        if let Err(message) = result {
            errors.push(FieldError::new(name, message));
        }
    }
    if errors.is_empty() {
        Ok(query)
    } else {
        Err(errors)
    }
}

const CURSOR: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// Cursors are opaque to clients (the encoding may change); today they carry the id of the
/// last payment on the page.
fn encode_cursor(last: Uuid) -> String {
    CURSOR.encode(format!("before:{last}"))
}

fn decode_cursor(cursor: &str) -> Option<Uuid> {
    let bytes = CURSOR.decode(cursor).ok()?;
    let text = std::str::from_utf8(&bytes).ok()?;
    Uuid::parse_str(text.strip_prefix("before:")?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        let id = Uuid::now_v7();
        assert_eq!(decode_cursor(&encode_cursor(id)), Some(id));
        assert_eq!(decode_cursor("garbage!"), None);
        assert_eq!(decode_cursor(&CURSOR.encode("pos:1")), None);
    }

    #[test]
    fn list_query_reports_each_bad_parameter() {
        let pairs = |p: &[(&str, &str)]| -> Vec<(String, String)> {
            p.iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect()
        };
        let query = parse_list_query(&pairs(&[("limit", "5"), ("status", "approved")])).unwrap();
        assert_eq!(query.limit, 5);
        assert_eq!(query.status, Some(PaymentStatus::Approved));
        let errors = parse_list_query(&pairs(&[
            ("limit", "0"),
            ("status", "done"),
            ("userId", "x"),
            ("cursor", "??"),
            ("sort", "asc"),
        ]))
        .unwrap_err();
        let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, vec!["limit", "status", "userId", "cursor", "sort"]);
        assert!(parse_list_query(&pairs(&[("limit", "101")])).is_err());
    }
}
