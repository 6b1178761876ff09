//! The paysys payments API.
//!
//! Takes payments over HTTP, stores each with an outbox row in one PostgreSQL transaction,
//! relays the outbox to RabbitMQ for the risk engine, and applies the decisions that come
//! back. Layers: `http` (routes, extractors, responses) over `store` (SQL) over PostgreSQL;
//! `relay` and `decisions` are the two background workers talking to RabbitMQ.

pub mod auth;
pub mod backlog;
pub mod config;
pub mod decisions;
pub mod error;
pub mod http;
pub mod metrics;
pub mod protection;
pub mod relay;
pub mod smoke;
pub mod store;
pub mod validation;
pub mod webhooks;
pub mod writer;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::auth::Authenticator;
use crate::config::Config;
use crate::http::AppState;

/// How often expired idempotency keys are deleted, and how long keys are kept.
const KEY_REAP_INTERVAL: Duration = Duration::from_secs(600);
pub const IDEMPOTENCY_RETENTION: Duration = Duration::from_secs(48 * 3600);

/// Runs the API on `listener` until `shutdown` resolves: stops accepting, finishes in-flight
/// requests, then stops the relay and the decision consumer.
/// Longest wait for the relay, the decision consumer and the housekeeping tasks to stop
/// once the HTTP server has drained.
const WORKERS_STOP_TIMEOUT: Duration = Duration::from_secs(15);

pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let pool = store::connect(&config.database_url, config.db_max_connections).await?;
    let auth = Arc::new(Authenticator::new(
        config.api_keys.clone(),
        config.jwt.clone(),
    ));
    let mut metrics = metrics::Metrics::new();
    metrics.watch_pool(pool.clone());
    if let Some(jwks) = auth.jwks() {
        metrics.register_jwks(jwks.metrics());
    }
    let metrics = Arc::new(metrics);
    let state = AppState {
        pool: pool.clone(),
        auth: auth.clone(),
        metrics: metrics.clone(),
        limits: config.limits.clone(),
        velocity_window: config.velocity_window,
        writer: writer::PaymentWriter::start(pool.clone(), config.velocity_window),
        rate_limits: Arc::new(protection::RateLimits::new(
            config.limits.rate_per_second,
            config.limits.rate_burst,
        )),
        relay_wake: Arc::new(Notify::new()),
        relays_connected: Arc::new(AtomicUsize::new(0)),
        consuming_decisions: Arc::new(AtomicBool::new(false)),
        backlog: Arc::new(backlog::Backlog::new(config.limits.max_undecided)),
        webhooks: config.webhooks.clone(),
    };
    let workers = CancellationToken::new();
    let relay = relay::Relay {
        pool: pool.clone(),
        amqp_url: config.amqp_url.clone(),
        topology: config.topology.clone(),
        settings: config.relay.clone(),
        wake: state.relay_wake.clone(),
        metrics: metrics.clone(),
        connected: state.relays_connected.clone(),
    };
    let relays: Vec<_> = (0..config.relay.workers)
        .map(|_| tokio::spawn(relay.clone().run(workers.clone())))
        .collect();
    let consumer = tokio::spawn(
        decisions::DecisionConsumer {
            pool: pool.clone(),
            amqp_url: config.amqp_url.clone(),
            topology: config.topology.clone(),
            metrics: metrics.clone(),
            consuming: state.consuming_decisions.clone(),
        }
        .run(workers.clone()),
    );
    let backlog = tokio::spawn(state.backlog.clone().run(
        pool.clone(),
        metrics.clone(),
        workers.clone(),
    ));
    // Loads the identity provider's keys at once and keeps them fresh.
    let jwks = auth
        .jwks()
        .map(|jwks| tokio::spawn(jwks.clone().run(workers.clone())));
    let outbox_depth = tokio::spawn(relay::watch_depth(
        pool.clone(),
        metrics.clone(),
        workers.clone(),
    ));
    let dispatcher = tokio::spawn(
        webhooks::dispatcher::Dispatcher {
            pool: pool.clone(),
            settings: config.webhooks.clone(),
            metrics: metrics.clone(),
        }
        .run(workers.clone()),
    );
    let retention = tokio::spawn(webhooks::retention::run(
        pool.clone(),
        config.webhooks.retention.clone(),
        workers.clone(),
    ));
    let reaper = tokio::spawn(housekeeping(
        pool.clone(),
        config.velocity_window,
        state.rate_limits.clone(),
        workers.clone(),
    ));

    tracing::info!(address = %listener.local_addr()?, "payments API listening");
    axum::serve(listener, http::router(state))
        .with_graceful_shutdown(shutdown)
        .await?;
    tracing::info!("HTTP server drained; stopping workers");
    workers.cancel();
    let stopped = async {
        futures::future::join_all(relays).await;
        let _ = tokio::join!(
            consumer,
            reaper,
            backlog,
            outbox_depth,
            dispatcher,
            retention
        );
        if let Some(jwks) = jwks {
            let _ = jwks.await;
        }
    };
    // Every worker bounds its own stop; this is the last guard, so that a stop always ends.
    // Leaving is safe: an unfinished relay batch rolls back into the outbox and unacked
    // decisions are redelivered, both picked up at the next start.
    if tokio::time::timeout(WORKERS_STOP_TIMEOUT, stopped)
        .await
        .is_err()
    {
        tracing::error!(
            timeout_s = WORKERS_STOP_TIMEOUT.as_secs(),
            "workers did not stop in time; leaving their work to the next start"
        );
    }
    // Closing waits for every connection to come back, and one held by a worker left
    // running never does.
    let _ = tokio::time::timeout(Duration::from_secs(5), pool.close()).await;
    Ok(())
}

/// Periodic clean-ups: expired idempotency keys, payers idle beyond the velocity window, idle
/// rate-limit buckets.
async fn housekeeping(
    pool: sqlx::PgPool,
    velocity_window: Duration,
    rate_limits: Arc<protection::RateLimits>,
    stop: CancellationToken,
) {
    loop {
        rate_limits.forget_idle();
        if let Ok(mut conn) = pool.acquire().await {
            match store::idempotency::delete_expired(&mut conn, IDEMPOTENCY_RETENTION).await {
                Ok(0) => {}
                Ok(deleted) => tracing::info!(deleted, "expired idempotency keys deleted"),
                Err(error) => tracing::warn!(%error, "cannot delete expired idempotency keys"),
            }
            match store::velocity::forget_idle(&mut conn, velocity_window).await {
                Ok(0) => {}
                Ok(forgotten) => tracing::info!(forgotten, "idle payers' velocity forgotten"),
                Err(error) => tracing::warn!(%error, "cannot forget idle payers' velocity"),
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(KEY_REAP_INTERVAL) => {}
        }
    }
}
