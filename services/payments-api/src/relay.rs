//! The outbox relay: publishes committed payments to RabbitMQ.
//!
//! Each round takes a batch of outbox rows in a transaction (deleted and locked in one
//! statement, `SKIP LOCKED`), publishes every message with the mandatory flag and pipelined
//! publisher confirms, and commits only after the broker acknowledged every one. A crash or
//! outage at any point rolls the deletion back and leaves the rows to be published again:
//! delivery is at-least-once and consumers are idempotent. Three database round trips a
//! batch (begin, take, commit). The request path wakes the relay after each commit; a poll
//! interval picks up rows committed by other replicas or left by a crashed one. Each API runs
//! `RELAY_WORKERS` relays, so one batch's broker and database round trips overlap the next's.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use lapin::types::FieldTable;
use lapin::{Channel, Connection};
use paysys_amqp::{self as amqp, PublishError};
use paysys_core::messages::SCHEMA_VERSION;
use paysys_core::topology::{PAYMENT_ROUTING_KEY, Topology};
use paysys_core::{PaymentData, PaymentMessage, Velocity};
use paysys_runtime::backoff::Backoff;
use prometheus_client::metrics::gauge::Gauge;
use sqlx::PgPool;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::config::RelaySettings;
use crate::metrics::Metrics;
use crate::store::outbox;
use crate::store::payments::PaymentRecord;

#[derive(Debug, thiserror::Error)]
enum RelayError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("broker: {0}")]
    Broker(#[from] PublishError),
    #[error("broker channel closed")]
    ChannelClosed,
}

impl From<lapin::Error> for RelayError {
    fn from(error: lapin::Error) -> Self {
        Self::Broker(error.into())
    }
}

#[derive(Clone)]
pub struct Relay {
    pub pool: PgPool,
    pub amqp_url: String,
    pub topology: Topology,
    pub settings: RelaySettings,
    pub wake: Arc<Notify>,
    pub metrics: Arc<Metrics>,
    /// Relay workers connected to the broker with the topology declared (for `/readyz`).
    pub connected: Arc<AtomicUsize>,
}

/// The message announcing a payment to the risk engine.
pub fn message_for(payment: &PaymentRecord) -> PaymentMessage {
    let money = payment.money();
    PaymentMessage {
        schema_version: SCHEMA_VERSION,
        payment_id: payment.id,
        payment_data: PaymentData {
            amount: money.to_decimal(),
            currency: money.currency,
            user_id: payment.user_id,
            payee_id: payment.payee_id,
            payment_method_id: payment.payment_method_id,
            created_at: Some(payment.created_at),
        },
        velocity: Some(Velocity {
            window_seconds: payment.velocity_window_seconds as u64,
            count: payment.velocity_count as u64,
            total_minor: payment.velocity_total_minor,
        }),
        history: payment.history(),
    }
}

impl Relay {
    /// Runs until `stop` is cancelled, reconnecting to the broker as often as needed.
    pub async fn run(self, stop: CancellationToken) {
        let mut waits = Backoff::default();
        while !stop.is_cancelled() {
            let connection = tokio::select! {
                _ = stop.cancelled() => break,
                connection = amqp::connect_with_backoff(&self.amqp_url, "payments-api relay") => connection,
            };
            let opened = tokio::select! {
                _ = stop.cancelled() => break,
                opened = amqp::open_confirm_channel(&connection, &self.topology) => opened,
            };
            let channel = match opened {
                Ok(channel) => channel,
                Err(error) => {
                    tracing::warn!(%error, "cannot open a publishing channel");
                    sleep_or_stop(&stop, waits.next_wait()).await;
                    continue;
                }
            };
            self.connected.fetch_add(1, Ordering::SeqCst);
            tracing::info!("outbox relay connected to RabbitMQ");
            waits.reset();
            let outcome = self.pump(&connection, &channel, &stop).await;
            self.connected.fetch_sub(1, Ordering::SeqCst);
            amqp::close(&connection).await;
            if let Err(error) = outcome {
                tracing::warn!(%error, "outbox relay lost the broker; reconnecting");
                sleep_or_stop(&stop, waits.next_wait()).await;
            }
        }
        tracing::info!("outbox relay stopped");
    }

    /// Publishes until the broker fails (Err) or `stop` (Ok). Database errors are waited out
    /// here without dropping the broker connection.
    async fn pump(
        &self,
        connection: &Connection,
        channel: &Channel,
        stop: &CancellationToken,
    ) -> Result<(), RelayError> {
        let mut last_backlog_check = Instant::now() - Duration::from_secs(60);
        let mut db_waits = Backoff::default();
        let mut blocked = BlockedWatch::new(&self.metrics);
        loop {
            // A stop abandons a batch in flight: its transaction rolls back, the rows stay in
            // the outbox for the next start. Waiting instead could take forever, since a
            // broker under a resource alarm holds confirms until the alarm clears.
            let drain = self.drain(channel, stop);
            tokio::pin!(drain);
            let drained = loop {
                tokio::select! {
                    _ = stop.cancelled() => return Ok(()),
                    drained = &mut drain => break drained,
                    _ = tokio::time::sleep(BLOCKED_CHECK) => blocked.observe(connection),
                }
            };
            blocked.observe(connection);
            match drained {
                Ok(()) => db_waits.reset(),
                Err(RelayError::Database(error)) => {
                    tracing::warn!(%error, "outbox relay cannot reach the database");
                    sleep_or_stop(stop, db_waits.next_wait()).await;
                    continue;
                }
                Err(broker) => return Err(broker),
            }
            if last_backlog_check.elapsed() >= Duration::from_secs(1) {
                self.refresh_backlog().await;
                last_backlog_check = Instant::now();
            }
            if !channel.status().connected() {
                return Err(RelayError::ChannelClosed);
            }
            tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(self.settings.poll_interval) => {}
            }
        }
    }

    /// Publishes batches until a batch comes back short (the outbox is drained) or `stop`.
    async fn drain(&self, channel: &Channel, stop: &CancellationToken) -> Result<(), RelayError> {
        loop {
            let published = self.publish_batch(channel).await?;
            if published < self.settings.batch_size as usize || stop.is_cancelled() {
                return Ok(());
            }
        }
    }

    async fn publish_batch(&self, channel: &Channel) -> Result<usize, RelayError> {
        let mut tx = self.pool.begin().await?;
        let rows = outbox::take(&mut tx, self.settings.batch_size).await?;
        if rows.is_empty() {
            return Ok(0);
        }
        let mut confirms = Vec::with_capacity(rows.len());
        for payment in &rows {
            let message = message_for(payment);
            let properties = amqp::persistent_json(&payment.id.to_string(), FieldTable::default());
            confirms.push(
                amqp::publish(
                    channel,
                    &self.topology.payments_exchange,
                    PAYMENT_ROUTING_KEY,
                    &message.encode(),
                    properties,
                )
                .await?,
            );
        }
        // Confirms arrive pipelined; a single nack or return fails the batch, which rolls
        // back and is published again (duplicates are expected downstream).
        for confirm in confirms {
            amqp::check_confirmation(confirm.await?)?;
        }
        tx.commit().await?;
        self.metrics.outbox_published.inc_by(rows.len() as u64);
        Ok(rows.len())
    }

    async fn refresh_backlog(&self) {
        if let Ok(mut conn) = self.pool.acquire().await
            && let Ok(backlog) = outbox::backlog(&mut conn).await
        {
            self.metrics.outbox_backlog.set(backlog);
        }
    }
}

/// How often a batch waiting for its confirms looks whether the broker blocked the connection.
const BLOCKED_CHECK: Duration = Duration::from_secs(1);

/// Reports, once per change, whether RabbitMQ blocks this relay's connection: under a memory
/// or disk alarm the broker stops reading from publishers, so confirms wait for the alarm
/// to clear while accepted payments wait in the outbox (nothing is lost; `outbox_backlog`
/// grows). The `broker_blocked` gauge counts the relay connections blocked right now.
struct BlockedWatch {
    gauge: Gauge,
    blocked: bool,
}

impl BlockedWatch {
    fn new(metrics: &Metrics) -> Self {
        Self {
            gauge: metrics.broker_blocked.clone(),
            blocked: false,
        }
    }

    fn observe(&mut self, connection: &Connection) {
        let blocked = connection.status().blocked();
        if blocked == self.blocked {
            return;
        }
        self.blocked = blocked;
        if blocked {
            self.gauge.inc();
            tracing::warn!(
                "RabbitMQ blocked publishing (a resource alarm); payments wait in the outbox until it clears"
            );
        } else {
            self.gauge.dec();
            tracing::info!("RabbitMQ unblocked publishing");
        }
    }
}

impl Drop for BlockedWatch {
    /// The connection goes away with the pump: it no longer counts as blocked.
    fn drop(&mut self) {
        if self.blocked {
            self.gauge.dec();
        }
    }
}

async fn sleep_or_stop(stop: &CancellationToken, delay: Duration) {
    tokio::select! {
        _ = stop.cancelled() => {}
        _ = tokio::time::sleep(delay) => {}
    }
}
