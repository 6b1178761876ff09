//! Liveness, readiness and metrics.

use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde_json::json;

use crate::auth::jwks::JwksHealth;
use crate::http::AppState;

/// The process is alive.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "Alive", body = Object, example = json!({"status": "ok"}))))]
pub async fn healthz() -> impl IntoResponse {
    Json(json!({"status": "ok"}))
}

/// Ready when the database answers and the broker connections are up: the relay can publish
/// and decisions are being consumed; and, with a JWKS, once its keys were loaded. A JWKS that
/// cannot be refreshed later shows as `stale` but leaves the API ready: the last good keys
/// still verify tokens.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses(
        (status = 200, description = "Ready", body = Object,
         example = json!({"status": "ready", "checks": {"database": "up", "broker": "up", "decisionConsumer": "up", "jwks": "up"}})),
        (status = 503, description = "A dependency is down; `checks` says which", body = Object),
    ))]
pub async fn readyz(State(app): State<AppState>) -> impl IntoResponse {
    let database = tokio::time::timeout(Duration::from_secs(1), crate::store::ping(&app.pool))
        .await
        .is_ok_and(|result| result.is_ok());
    let broker = app.relays_connected.load(Ordering::SeqCst) > 0;
    let decisions = app.consuming_decisions.load(Ordering::SeqCst);
    let jwks = app.auth.jwks().map(|jwks| jwks.health());
    let ready = database && broker && decisions && jwks != Some(JwksHealth::Down);
    let word = |up: bool| if up { "up" } else { "down" };
    let mut checks = json!({
        "database": word(database),
        "broker": word(broker),
        "decisionConsumer": word(decisions),
    });
    if let Some(jwks) = jwks {
        checks["jwks"] = jwks.as_str().into();
    }
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(json!({
            "status": if ready { "ready" } else { "not ready" },
            "checks": checks,
        })),
    )
}

/// Prometheus metrics (text exposition format).
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Metrics", content_type = "application/openmetrics-text", body = String)))]
pub async fn metrics(State(app): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        app.metrics.render(),
    )
}
