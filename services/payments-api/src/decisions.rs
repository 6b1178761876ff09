//! Consumes the risk engine's decisions and applies them to payments.
//!
//! Manual acks, after the database committed: a crash before the ack redelivers the decision,
//! and applying it again is a no-op. Malformed decisions and decisions for payments this API
//! does not know go to the dead-letter queue with their reason; a database outage requeues
//! the message and backs off.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::StreamExt;
use lapin::Channel;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions};
use lapin::types::FieldTable;
use paysys_core::DecisionMessage;
use paysys_core::amqp;
use paysys_core::topology::{DEAD_DECISIONS_ROUTING_KEY, Topology};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::metrics::{Metrics, OutcomeLabels, ReasonLabels};
use crate::store::decisions::{self, Applied};

/// Decisions handled at once (and the prefetch): enough to keep the database busy.
const CONCURRENCY: u16 = 64;
/// How long decisions in hand may take to finish once consuming stops.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

pub struct DecisionConsumer {
    pub pool: PgPool,
    pub amqp_url: String,
    pub topology: Topology,
    pub metrics: Arc<Metrics>,
    /// True while consuming (for `/readyz`).
    pub consuming: Arc<AtomicBool>,
}

/// What to do with a delivery once handled.
enum Settle {
    Ack,
    /// Put it back for a later attempt (the database is unreachable).
    Requeue,
}

impl DecisionConsumer {
    pub async fn run(self, stop: CancellationToken) {
        let this = Arc::new(self);
        while !stop.is_cancelled() {
            let connection = tokio::select! {
                _ = stop.cancelled() => break,
                connection = amqp::connect_with_backoff(&this.amqp_url, "payments-api decisions") => connection,
            };
            if let Err(error) = this.clone().consume(&connection, &stop).await {
                tracing::warn!(%error, "decision consumer lost the broker; reconnecting");
            }
            this.consuming.store(false, Ordering::SeqCst);
            let _ = connection.close(200, "bye".into()).await;
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
        }
        tracing::info!("decision consumer stopped");
    }

    async fn consume(
        self: Arc<Self>,
        connection: &lapin::Connection,
        stop: &CancellationToken,
    ) -> anyhow::Result<()> {
        let channel = amqp::open_confirm_channel(connection, &self.topology).await?;
        channel
            .basic_qos(CONCURRENCY, BasicQosOptions::default())
            .await?;
        let consumer = channel
            .basic_consume(
                self.topology.decisions_queue.as_str().into(),
                "payments-api".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        self.consuming.store(true, Ordering::SeqCst);
        tracing::info!(queue = %self.topology.decisions_queue, "consuming decisions");
        // take_until: on shutdown (or a broken channel) stop taking deliveries but finish
        // those in hand. On a dead connection an ack may never complete, so the finishing is
        // bounded: whatever is still unacked after DRAIN_TIMEOUT is abandoned, and the broker
        // redelivers it (applying a decision twice is a no-op).
        let broken = CancellationToken::new();
        let ending = {
            let (stop, broken) = (stop.clone(), broken.clone());
            move || {
                let (stop, broken) = (stop.clone(), broken.clone());
                async move {
                    tokio::select! {
                        _ = stop.cancelled() => {}
                        _ = broken.cancelled() => {}
                    }
                }
            }
        };
        let work = consumer.take_until(ending()).for_each_concurrent(
            usize::from(CONCURRENCY),
            |delivery| {
                let (this, channel, broken) = (self.clone(), channel.clone(), broken.clone());
                async move {
                    let result = match delivery {
                        Ok(delivery) => this.handle(&channel, delivery).await,
                        Err(error) => Err(error),
                    };
                    if let Err(error) = result {
                        tracing::warn!(%error, "decision channel failed");
                        broken.cancel();
                    }
                }
            },
        );
        let drain_deadline = async {
            ending().await;
            tokio::time::sleep(DRAIN_TIMEOUT).await;
        };
        tokio::select! {
            _ = work => {}
            _ = drain_deadline => {
                tracing::warn!("decisions in hand did not finish in time; the broker will redeliver them");
                broken.cancel();
            }
        }
        if stop.is_cancelled() && !broken.is_cancelled() {
            let _ = channel.close(200, "shutting down".into()).await;
            return Ok(());
        }
        anyhow::bail!("the decisions consumer stopped")
    }

    async fn handle(&self, channel: &Channel, delivery: Delivery) -> lapin::Result<()> {
        let settle = match DecisionMessage::decode(&delivery.data) {
            Err(error) => {
                self.dead_letter(channel, &delivery, &error.to_string(), "malformed")
                    .await?
            }
            Ok(decision) => self.apply(channel, &delivery, &decision).await?,
        };
        match settle {
            Settle::Ack => delivery.acker.ack(BasicAckOptions::default()).await?,
            Settle::Requeue => {
                delivery
                    .acker
                    .nack(BasicNackOptions {
                        requeue: true,
                        ..Default::default()
                    })
                    .await?
            }
        };
        Ok(())
    }

    async fn apply(
        &self,
        channel: &Channel,
        delivery: &Delivery,
        decision: &DecisionMessage,
    ) -> lapin::Result<Settle> {
        let applied = match self.pool.acquire().await {
            Ok(mut conn) => decisions::apply(&mut conn, decision).await,
            Err(error) => Err(error),
        };
        let label = match applied {
            Ok(Applied::Decided) => decision.outcome.as_str(),
            Ok(Applied::Duplicate) => "duplicate",
            Ok(Applied::Ignored { current }) => {
                tracing::info!(payment_id = %decision.payment_id, %current, "decision for a payment no longer pending recorded and ignored");
                "ignored"
            }
            Ok(Applied::UnknownPayment) => {
                return self
                    .dead_letter(channel, delivery, "unknown payment", "unknown_payment")
                    .await;
            }
            Err(error) => {
                tracing::warn!(%error, payment_id = %decision.payment_id, "cannot apply decision; requeueing");
                // Back off so an outage does not turn into a hot redelivery loop.
                tokio::time::sleep(Duration::from_millis(500)).await;
                return Ok(Settle::Requeue);
            }
        };
        self.metrics
            .decisions_applied
            .get_or_create(&OutcomeLabels {
                outcome: label.to_owned(),
            })
            .inc();
        Ok(Settle::Ack)
    }

    async fn dead_letter(
        &self,
        channel: &Channel,
        delivery: &Delivery,
        reason: &str,
        label: &str,
    ) -> lapin::Result<Settle> {
        tracing::warn!(reason, "dead-lettering a decision message");
        match amqp::dead_letter(
            channel,
            &self.topology,
            DEAD_DECISIONS_ROUTING_KEY,
            &self.topology.decisions_queue,
            &delivery.data,
            reason,
        )
        .await
        {
            Ok(()) => {
                self.metrics
                    .dead_lettered
                    .get_or_create(&ReasonLabels {
                        reason: label.to_owned(),
                    })
                    .inc();
                Ok(Settle::Ack)
            }
            Err(amqp::PublishError::Broker(error)) => Err(error),
            // Not confirmed: keep the message and try again later rather than lose it.
            Err(_) => Ok(Settle::Requeue),
        }
    }
}
