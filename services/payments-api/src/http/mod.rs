//! The HTTP surface: state, router, and the layers every request passes through.

pub mod actions;
pub mod extract;
pub mod health;
pub mod idempotent;
pub mod openapi;
pub mod payments;
pub mod request_id;
pub mod views;
pub mod webhooks;

use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::error_handling::HandleErrorLayer;
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::{BoxError, Extension, Router};
use sqlx::PgPool;
use tokio::sync::Notify;
use tower::ServiceBuilder;
use tower::limit::GlobalConcurrencyLimitLayer;
use tower::load_shed::LoadShedLayer;
use tower::load_shed::error::Overloaded;
use tower::timeout::TimeoutLayer;
use tower::timeout::error::Elapsed;
use tower_http::trace::{DefaultOnFailure, DefaultOnResponse, TraceLayer};
use tracing::Level;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

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
    /// Webhook settings: the secrets' key (when enabled) and the destination policy.
    pub webhooks: crate::webhooks::WebhookSettings,
}

/// Which URL space a request came by: the handlers answer in its body shapes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// `/v1/...`: every resource body in camelCase.
    V1,
    /// The routes from before `/v1`, with their bodies as they were: the original demo's
    /// `POST /payments` (documented) and the others (served for existing clients, not
    /// documented; use `/v1`).
    Unversioned,
}

impl Version {
    /// The path prefix of its routes.
    pub fn prefix(self) -> &'static str {
        match self {
            Self::V1 => "/v1",
            Self::Unversioned => "",
        }
    }
}

/// The OpenAPI document the router serves, made without a server (the committed
/// `openapi.json` is compared with it).
pub fn openapi_document() -> utoipa::openapi::OpenApi {
    let (_, mut openapi) = routes(1, Document::default()).split_for_parts();
    openapi::finish(&mut openapi);
    openapi
}

/// The OpenAPI document of the router it was made with, served at `/openapi.json`.
pub type Document = Arc<OnceLock<utoipa::openapi::OpenApi>>;

pub fn router(state: AppState) -> Router {
    let document = Document::default();
    let (router, mut openapi) =
        routes(state.limits.max_in_flight, document.clone()).split_for_parts();
    openapi::finish(&mut openapi);
    assert!(document.set(openapi).is_ok(), "a new document is empty");
    router
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(
            ServiceBuilder::new()
                .layer(HandleErrorLayer::new(unavailable))
                .layer(TimeoutLayer::new(state.limits.request_timeout)),
        )
        .layer(middleware::from_fn_with_state(
            state.clone(),
            record_metrics,
        ))
        .layer(
            // One span per request, named by route template and method (never the URI: it
            // holds payment ids and query values) and carrying the request id, so every log
            // line of the request has it; its events are off unless RUST_LOG asks, as
            // failures are already logged where they happen.
            TraceLayer::new_for_http()
                .make_span_with(|request: &Request| {
                    let route = request
                        .extensions()
                        .get::<MatchedPath>()
                        .map_or("unmatched", MatchedPath::as_str);
                    let request_id = request
                        .headers()
                        .get(request_id::HEADER)
                        .and_then(|id| id.to_str().ok())
                        .unwrap_or_default();
                    tracing::info_span!("request", method = %request.method(), route, request_id)
                })
                .on_response(DefaultOnResponse::new().level(Level::DEBUG))
                .on_failure(DefaultOnFailure::new().level(Level::DEBUG)),
        )
        // Outermost: the id is settled before the span is made, and every answer has it.
        .layer(middleware::from_fn(request_id::propagate))
        .with_state(state)
}

/// Every route, registered once: [`routes!`] gives the handler to the router and its
/// `#[utoipa::path]` to the OpenAPI document, and each row of [`actions::ACTIONS`] gives its
/// routes and operations the same way, so the two cannot drift apart. The payments routes are
/// served twice: under `/v1` (documented) and unversioned (only the original demo's
/// `POST /payments` documented, as its alias).
fn routes(max_in_flight: usize, document: Document) -> OpenApiRouter<AppState> {
    // Only the payments routes count against MAX_IN_FLIGHT: probes and scrapes must still be
    // answered when the API sheds load, or an overloaded pod would be restarted for it. One
    // semaphore for all of them, both versions (the global layer's clones share it); beyond
    // it, 503 at once (load shed).
    let in_flight = GlobalConcurrencyLimitLayer::new(max_in_flight);
    let v1 = payment_routes(Version::V1, in_flight.clone()).merge(webhook_routes());
    let (unversioned, unversioned_doc) =
        payment_routes(Version::Unversioned, in_flight).split_for_parts();
    let document = OpenApiRouter::new()
        .routes(routes!(openapi::serve))
        .layer(Extension(document));
    let mut router = OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .nest("/v1", v1)
        .routes(routes!(health::healthz))
        .routes(routes!(health::readyz))
        .routes(routes!(health::metrics))
        .merge(document);
    openapi::add_demo_alias(router.get_openapi_mut(), &unversioned_doc);
    router.merge(OpenApiRouter::from(unversioned))
}

/// The payments routes of one version.
fn payment_routes(
    version: Version,
    in_flight: GlobalConcurrencyLimitLayer,
) -> OpenApiRouter<AppState> {
    let payments = match version {
        Version::V1 => OpenApiRouter::new().routes(routes!(payments::create, payments::list)),
        // Listing came with `/v1`: unversioned, `/payments` serves the demo's POST alone, so
        // that what it answers is what the document declares (405 and `Allow` included).
        Version::Unversioned => OpenApiRouter::new().routes(routes!(payments::create)),
    }
    .routes(routes!(payments::get_one));
    actions::ACTIONS
        .iter()
        .fold(payments, |router, action| router.routes(action.routes()))
        .routes(routes!(payments::dispute))
        .route_layer(
            ServiceBuilder::new()
                .layer(HandleErrorLayer::new(unavailable))
                .layer(LoadShedLayer::new())
                .layer(in_flight),
        )
        .layer(Extension(version))
}

/// The webhook endpoints and the events: `/v1` only (they came after it).
fn webhook_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(webhooks::create_endpoint, webhooks::list_endpoints))
        .routes(routes!(webhooks::get_endpoint, webhooks::delete_endpoint))
        .routes(routes!(webhooks::rotate_secret))
        .routes(routes!(webhooks::list_attempts))
        .routes(routes!(webhooks::list_events))
        .layer(Extension(Version::V1))
}

async fn not_found() -> ApiError {
    ApiError::NotFound("no such route".into())
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

/// The errors of tower's layers as the API's answers: past the configured timeout, or beyond
/// `MAX_IN_FLIGHT`, `503` with `Retry-After` instead of a hanging or queued request.
async fn unavailable(error: BoxError) -> ApiError {
    let message = if error.is::<Elapsed>() {
        "the request timed out; retry shortly"
    } else if error.is::<Overloaded>() {
        "the server is at capacity; retry shortly"
    } else {
        tracing::error!(%error, "unexpected middleware error");
        return ApiError::Internal;
    };
    ApiError::Unavailable {
        message: message.into(),
        retry_after_secs: 1,
    }
}

/// Counts requests by route template, method and status, and times them (no tower-http
/// layer records into prometheus-client).
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
