//! The HTTP surface: state, router, and the layers every request passes through.

pub mod extract;
pub mod health;
pub mod idempotent;
pub mod openapi;
pub mod payments;
pub mod views;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use sqlx::PgPool;
use tokio::sync::Notify;

use crate::auth::Authenticator;
use crate::config::Limits;
use crate::error::ApiError;
use crate::metrics::{Metrics, RequestLabels, RouteLabels};

/// What handlers share.
#[derive(Clone)]
pub struct AppState {
    pub pool: PgPool,
    pub auth: Arc<Authenticator>,
    pub metrics: Arc<Metrics>,
    pub limits: Limits,
    pub velocity_window: Duration,
    pub rate_limits: Arc<crate::protection::RateLimits>,
    /// Permits for requests in flight (`MAX_IN_FLIGHT`).
    pub in_flight: Arc<tokio::sync::Semaphore>,
    /// Group-commits payments created without an Idempotency-Key.
    pub writer: crate::writer::PaymentWriter,
    /// Wakes the outbox relay after a payment commits.
    pub relay_wake: Arc<Notify>,
    /// Relay workers holding a confirmed broker channel.
    pub relays_connected: Arc<AtomicUsize>,
    /// The decision consumer is consuming.
    pub consuming_decisions: Arc<AtomicBool>,
    /// Payments waiting for a decision; new ones are refused above `MAX_UNDECIDED`.
    pub backlog: Arc<crate::backlog::Backlog>,
}

pub fn router(state: AppState) -> Router {
    // Only the payments routes count against MAX_IN_FLIGHT: probes and scrapes must still be
    // answered when the API sheds load, or an overloaded pod would be restarted for it.
    let payments = Router::new()
        .route("/payments", post(payments::create).get(payments::list))
        .route("/payments/{id}", get(payments::get_one))
        .route(
            "/payments/{id}/capture",
            post(payments::capture).put(payments::capture_put),
        )
        .route("/payments/{id}/cancel", post(payments::cancel))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            crate::protection::bound_in_flight,
        ));
    Router::new()
        .merge(payments)
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .route("/openapi.json", get(openapi::serve))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), deadline))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            record_metrics,
        ))
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::NotFound("no such route".into())
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

/// Answers 503 instead of letting a request hang past the configured timeout.
async fn deadline(State(app): State<AppState>, request: Request, next: Next) -> Response {
    match tokio::time::timeout(app.limits.request_timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::Unavailable {
            message: "the request timed out; retry shortly".into(),
            retry_after_secs: 1,
        }
        .into_response(),
    }
}

/// Counts requests by route template, method and status, and times them.
async fn record_metrics(State(app): State<AppState>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str)
        .to_owned();
    let method = request.method().as_str().to_owned();
    let started = Instant::now();
    let response = next.run(request).await;
    app.metrics
        .request_duration
        .get_or_create(&RouteLabels {
            route: route.clone(),
        })
        .observe(started.elapsed().as_secs_f64());
    app.metrics
        .requests
        .get_or_create(&RequestLabels {
            route,
            method,
            status: response.status().as_u16(),
        })
        .inc();
    response
}
