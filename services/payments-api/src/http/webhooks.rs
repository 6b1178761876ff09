//! The webhook routes: a caller's endpoints (register, list, get, delete, rotate the secret,
//! see the attempts) and its events (`GET /v1/events`, the polling fallback and replay
//! source). Owner-scoped like payments: another caller's endpoint is a 404.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::error::{ApiError, FieldError, Problem};
use crate::http::AppState;
use crate::http::extract::{Caller, JsonBody};
use crate::store;
use crate::store::webhooks::{Attempt, Endpoint};
use crate::validation::{CreateEndpointRequest, NewEndpoint, read};
use crate::webhooks::events::{EventPage, WebhookEvent};
use crate::webhooks::secrets::SecretBox;

const DEFAULT_EVENTS: i64 = 100;
const MAX_EVENTS: i64 = 500;
const DEFAULT_ATTEMPTS: i64 = 20;
const MAX_ATTEMPTS: i64 = 100;

/// A webhook endpoint (never its secret).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EndpointView {
    pub id: Uuid,
    pub url: String,
    #[schema(example = json!(["payment.approved"]))]
    pub event_types: Vec<String>,
    pub created_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret_rotated_at: Option<DateTime<Utc>>,
    /// Since when deliveries are being given up (after the retry window); cleared by the next
    /// successful delivery.
    pub failing_since: Option<DateTime<Utc>>,
    /// The endpoint failed several times in a row: no delivery is tried before this time.
    pub paused_until: Option<DateTime<Utc>>,
}

impl From<Endpoint> for EndpointView {
    fn from(endpoint: Endpoint) -> Self {
        Self {
            id: endpoint.id,
            url: endpoint.url,
            event_types: endpoint.event_types,
            created_at: endpoint.created_at,
            secret_rotated_at: endpoint.secret_rotated_at,
            failing_since: endpoint.failing_since,
            paused_until: endpoint.paused_until,
        }
    }
}

/// An endpoint with its signing secret: answered once, at creation and at rotation.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EndpointWithSecret {
    #[serde(flatten)]
    pub endpoint: EndpointView,
    /// The HMAC-SHA256 key of `Paysys-Signature` (the whole string's bytes). Shown only now:
    /// store it; it cannot be read again.
    #[schema(example = "whsec_3q2-7wEXAMPLEEXAMPLEEXAMPLEEXAMPLEEXAMPLEEX")]
    pub secret: String,
}

/// The caller's endpoints.
#[derive(Debug, Serialize, ToSchema)]
pub struct EndpointList {
    pub data: Vec<EndpointView>,
}

/// One delivery attempt.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AttemptView {
    pub id: i64,
    pub event_id: i64,
    pub attempted_at: DateTime<Utc>,
    /// The response's status; absent when none came (refused, timed out, URL refused).
    pub http_status: Option<i16>,
    pub latency_ms: i32,
    /// Why the attempt failed; absent for a 2xx.
    pub error: Option<String>,
}

impl From<Attempt> for AttemptView {
    fn from(a: Attempt) -> Self {
        Self {
            id: a.id,
            event_id: a.event_id,
            attempted_at: a.attempted_at,
            http_status: a.http_status,
            latency_ms: a.latency_ms,
            error: a.error,
        }
    }
}

/// A page of attempts, newest first.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AttemptPage {
    pub data: Vec<AttemptView>,
    pub has_more: bool,
}

fn secrets(app: &AppState) -> Result<&SecretBox, ApiError> {
    app.webhooks
        .secrets
        .as_ref()
        .ok_or_else(|| ApiError::NotFound("webhooks are not enabled on this server".into()))
}

fn parse_id(id: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(id).map_err(|_| ApiError::validation("id", "must be a UUID"))
}

fn endpoint_not_found() -> ApiError {
    ApiError::NotFound("webhook endpoint not found".into())
}

/// Register a webhook endpoint.
///
/// The URL is checked now (scheme, and every address its host resolves to) and again at each
/// delivery. The answer carries the signing secret, shown only this once.
#[utoipa::path(
    post, path = "/webhook-endpoints", tag = "webhooks",
    request_body = CreateEndpointRequest,
    responses(
        (status = 201, description = "Registered; `secret` is shown only now", body = EndpointWithSecret,
         headers(("Location" = String, description = "The endpoint's URL"))),
        (status = 400, description = "Bad URL (form, scheme, or a host resolving to a refused address) or unknown event type; nothing is stored", body = Problem),
        (status = 401, description = "Missing or invalid credentials", body = Problem),
        (status = 404, description = "Webhooks are not enabled on this server", body = Problem),
        (status = 413, description = "Body too large", body = Problem),
        (status = 415, description = "Content-Type is not application/json", body = Problem),
    ),
    security(("api_key" = []), ("bearer" = []))
)]
pub async fn create_endpoint(
    State(app): State<AppState>,
    Caller(principal): Caller,
    JsonBody(body): JsonBody<true>,
) -> Result<Response, ApiError> {
    let secrets = secrets(&app)?;
    let NewEndpoint { url, event_types } = read::<CreateEndpointRequest>(&body)
        .and_then(|(request, errors)| request.validate(errors))
        .map_err(ApiError::Validation)?;
    let url = app
        .webhooks
        .policy
        .check_destination(&url)
        .await
        .map_err(|message| ApiError::validation("url", message))?;
    let id = Uuid::now_v7();
    let secret = SecretBox::generate();
    let types: Vec<String> = event_types.iter().map(|t| t.as_str().to_owned()).collect();
    let mut conn = app.pool.acquire().await?;
    let endpoint = store::webhooks::insert(
        &mut conn,
        id,
        &principal.0,
        url.as_str(),
        &types,
        &secrets.seal(id, &secret),
    )
    .await?;
    let location = format!("/v1/webhook-endpoints/{id}");
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(EndpointWithSecret {
            endpoint: endpoint.into(),
            secret,
        }),
    )
        .into_response())
}

/// List the caller's webhook endpoints, oldest first.
#[utoipa::path(
    get, path = "/webhook-endpoints", tag = "webhooks",
    responses(
        (status = 200, description = "The caller's endpoints", body = EndpointList),
        (status = 401, description = "Missing or invalid credentials", body = Problem),
        (status = 404, description = "Webhooks are not enabled on this server", body = Problem),
    ),
    security(("api_key" = []), ("bearer" = []))
)]
pub async fn list_endpoints(
    State(app): State<AppState>,
    Caller(principal): Caller,
) -> Result<Json<EndpointList>, ApiError> {
    secrets(&app)?;
    let mut conn = app.pool.acquire().await?;
    let endpoints = store::webhooks::list(&mut conn, &principal.0).await?;
    Ok(Json(EndpointList {
        data: endpoints.into_iter().map(EndpointView::from).collect(),
    }))
}

/// Get one webhook endpoint.
#[utoipa::path(
    get, path = "/webhook-endpoints/{id}", tag = "webhooks",
    params(("id" = Uuid, Path, description = "Endpoint id")),
    responses(
        (status = 200, description = "The endpoint", body = EndpointView),
        (status = 400, description = "The id is not a UUID", body = Problem),
        (status = 401, description = "Missing or invalid credentials", body = Problem),
        (status = 404, description = "No such endpoint for this caller (or webhooks are not enabled)", body = Problem),
    ),
    security(("api_key" = []), ("bearer" = []))
)]
pub async fn get_endpoint(
    State(app): State<AppState>,
    Caller(principal): Caller,
    Path(id): Path<String>,
) -> Result<Json<EndpointView>, ApiError> {
    secrets(&app)?;
    let id = parse_id(&id)?;
    let mut conn = app.pool.acquire().await?;
    let endpoint = store::webhooks::find(&mut conn, &principal.0, id)
        .await?
        .ok_or_else(endpoint_not_found)?;
    Ok(Json(endpoint.into()))
}

/// Delete a webhook endpoint: nothing more is delivered to it.
#[utoipa::path(
    delete, path = "/webhook-endpoints/{id}", tag = "webhooks",
    params(("id" = Uuid, Path, description = "Endpoint id")),
    responses(
        (status = 204, description = "Deleted, with its pending deliveries and attempts"),
        (status = 400, description = "The id is not a UUID", body = Problem),
        (status = 401, description = "Missing or invalid credentials", body = Problem),
        (status = 404, description = "No such endpoint for this caller (or webhooks are not enabled)", body = Problem),
    ),
    security(("api_key" = []), ("bearer" = []))
)]
pub async fn delete_endpoint(
    State(app): State<AppState>,
    Caller(principal): Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    secrets(&app)?;
    let id = parse_id(&id)?;
    let mut conn = app.pool.acquire().await?;
    if store::webhooks::delete(&mut conn, &principal.0, id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(endpoint_not_found())
    }
}

/// Replace the endpoint's signing secret; the new one is shown only in this answer and signs
/// every delivery from now on.
#[utoipa::path(
    post, path = "/webhook-endpoints/{id}/rotate-secret", tag = "webhooks",
    params(("id" = Uuid, Path, description = "Endpoint id")),
    responses(
        (status = 200, description = "Rotated; `secret` is shown only now", body = EndpointWithSecret),
        (status = 400, description = "The id is not a UUID", body = Problem),
        (status = 401, description = "Missing or invalid credentials", body = Problem),
        (status = 404, description = "No such endpoint for this caller (or webhooks are not enabled)", body = Problem),
    ),
    security(("api_key" = []), ("bearer" = []))
)]
pub async fn rotate_secret(
    State(app): State<AppState>,
    Caller(principal): Caller,
    Path(id): Path<String>,
) -> Result<Json<EndpointWithSecret>, ApiError> {
    let secrets = secrets(&app)?;
    let id = parse_id(&id)?;
    let secret = SecretBox::generate();
    let mut conn = app.pool.acquire().await?;
    let endpoint =
        store::webhooks::rotate_secret(&mut conn, &principal.0, id, &secrets.seal(id, &secret))
            .await?
            .ok_or_else(endpoint_not_found)?;
    Ok(Json(EndpointWithSecret {
        endpoint: endpoint.into(),
        secret,
    }))
}

/// The endpoint's delivery attempts, newest first.
#[utoipa::path(
    get, path = "/webhook-endpoints/{id}/attempts", tag = "webhooks",
    params(
        ("id" = Uuid, Path, description = "Endpoint id"),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 100, description = "1 to 100, default 20"),
        ("before" = Option<i64>, Query, minimum = 1, description = "Only attempts older than this attempt id (the last `id` of the previous page)"),
    ),
    responses(
        (status = 200, description = "A page of attempts", body = AttemptPage),
        (status = 400, description = "Bad id or query parameters", body = Problem),
        (status = 401, description = "Missing or invalid credentials", body = Problem),
        (status = 404, description = "No such endpoint for this caller (or webhooks are not enabled)", body = Problem),
    ),
    security(("api_key" = []), ("bearer" = []))
)]
pub async fn list_attempts(
    State(app): State<AppState>,
    Caller(principal): Caller,
    Path(id): Path<String>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Json<AttemptPage>, ApiError> {
    secrets(&app)?;
    let id = parse_id(&id)?;
    let Query(pairs) = query.map_err(|e| ApiError::validation("query", e.body_text()))?;
    let mut limit = DEFAULT_ATTEMPTS;
    let mut before = None;
    let mut errors = Vec::new();
    for (name, value) in &pairs {
        match name.as_str() {
            "limit" => match parse_bounded(value, 1, MAX_ATTEMPTS) {
                Some(value) => limit = value,
                None => errors.push(FieldError::new(
                    name,
                    format!("must be an integer from 1 to {MAX_ATTEMPTS}"),
                )),
            },
            "before" => match parse_bounded(value, 1, i64::MAX) {
                Some(value) => before = Some(value),
                None => errors.push(FieldError::new(name, "must be a positive integer")),
            },
            _ => errors.push(FieldError::new(name, "unknown query parameter")),
        }
    }
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let mut conn = app.pool.acquire().await?;
    store::webhooks::find(&mut conn, &principal.0, id)
        .await?
        .ok_or_else(endpoint_not_found)?;
    let (attempts, has_more) = store::webhooks::attempts(&mut conn, id, before, limit).await?;
    Ok(Json(AttemptPage {
        data: attempts.into_iter().map(AttemptView::from).collect(),
        has_more,
    }))
}

/// The caller's events after `after`, oldest first: the polling fallback of webhooks and the
/// source to replay missed ones. Ids increase in commit order, so a client that keeps the last
/// id it saw and asks for what comes after never misses one.
#[utoipa::path(
    get, path = "/events", tag = "webhooks",
    params(
        ("after" = Option<i64>, Query, minimum = 0, description = "Only events with a larger id (default 0: from the first)"),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 500, description = "1 to 500, default 100"),
    ),
    responses(
        (status = 200, description = "A page of events", body = EventPage),
        (status = 400, description = "Bad query parameters", body = Problem),
        (status = 401, description = "Missing or invalid credentials", body = Problem),
    ),
    security(("api_key" = []), ("bearer" = []))
)]
pub async fn list_events(
    State(app): State<AppState>,
    Caller(principal): Caller,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Json<EventPage>, ApiError> {
    let Query(pairs) = query.map_err(|e| ApiError::validation("query", e.body_text()))?;
    let mut after = 0;
    let mut limit = DEFAULT_EVENTS;
    let mut errors = Vec::new();
    for (name, value) in &pairs {
        match name.as_str() {
            "after" => match parse_bounded(value, 0, i64::MAX) {
                Some(value) => after = value,
                None => errors.push(FieldError::new(name, "must be an integer of at least 0")),
            },
            "limit" => match parse_bounded(value, 1, MAX_EVENTS) {
                Some(value) => limit = value,
                None => errors.push(FieldError::new(
                    name,
                    format!("must be an integer from 1 to {MAX_EVENTS}"),
                )),
            },
            _ => errors.push(FieldError::new(name, "unknown query parameter")),
        }
    }
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let mut conn = app.pool.acquire().await?;
    let (events, has_more) = store::events::list(&mut conn, &principal.0, after, limit).await?;
    let data = events
        .into_iter()
        .map(|e| {
            WebhookEvent::render(e.id, e.event_type, e.created_at, &e.payment).map_err(|error| {
                tracing::error!(event = e.id, %error, "stored event cannot be rendered");
                ApiError::Internal
            })
        })
        .collect::<Result<_, _>>()?;
    Ok(Json(EventPage { data, has_more }))
}

fn parse_bounded(value: &str, min: i64, max: i64) -> Option<i64> {
    value
        .parse::<i64>()
        .ok()
        .filter(|v| (min..=max).contains(v))
}
