//! The paysys risk engine.
//!
//! Consumes payments from RabbitMQ, decides each (by rules, by a risk model behind the hard
//! rules, or, as in the original demo, at random), publishes the decision and acks the payment
//! once the decision is confirmed.
//! Stateless: the payer's recent activity arrives in the message, so the engine scales by
//! adding replicas. Modules: `config` (environment), `rules` (rule file: load, validate,
//! evaluate), `random` (repeatable random mode), `model` (the risk model: card checks,
//! scoring), `decide` (mode dispatch), `consumer` (the broker loop), `http` and `metrics`
//! (probes and Prometheus), `drift` (live features against the model's training data).

pub mod config;
pub mod consumer;
pub mod decide;
pub mod drift;
pub mod http;
pub mod metrics;
pub mod model;
pub mod random;
pub mod rules;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::consumer::Consumer;
use crate::metrics::Metrics;

/// Runs the engine until `shutdown` resolves: then stops consuming, finishes and acks the
/// payments in hand, and only then stops the HTTP port (probes answer during the drain).
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let metrics = Arc::new(Metrics::for_decider(&config.decider, config.drift_window));
    let consuming = Arc::new(AtomicBool::new(false));
    let stop = CancellationToken::new();
    let consumer = tokio::spawn(
        Consumer {
            amqp_url: config.amqp_url.clone(),
            topology: config.topology.clone(),
            prefetch: config.prefetch,
            decider: Arc::new(config.decider.clone()),
            metrics: metrics.clone(),
            consuming: consuming.clone(),
        }
        .run(stop.clone()),
    );
    let http_stop = CancellationToken::new();
    let router = http::router(http::HttpState { metrics, consuming });
    tracing::info!(address = %listener.local_addr()?, "risk engine HTTP port listening");
    let server = tokio::spawn(
        axum::serve(listener, router)
            .with_graceful_shutdown(http_stop.clone().cancelled_owned())
            .into_future(),
    );
    shutdown.await;
    stop.cancel();
    consumer.await?;
    http_stop.cancel();
    server.await??;
    Ok(())
}
