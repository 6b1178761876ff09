//! Consumes the risk engine's decisions and applies them to payments.
//!
//! Manual acks, after the database committed: a crash before the ack redelivers the decision,
//! and applying it again is a no-op. Malformed decisions and decisions for payments this API
//! does not know go to the dead-letter queue with their reason; a database outage requeues
//! the message and backs off.
//!
//! Decisions are applied in batches, like payments are written: whatever deliveries are
//! ready (up to `BATCH`) are applied in one statement and one commit, so under load a commit
//! carries many decisions instead of one; an idle consumer applies batches of one. Batches
//! are applied concurrently but acknowledged in delivery order, each with one `multiple`
//! ack: one frame per batch instead of one per decision, for this process and for the
//! broker, which records a quorum queue's acks in its log.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::StreamExt;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Consumer};
use paysys_amqp as amqp;
use paysys_core::DecisionMessage;
use paysys_core::topology::{DEAD_DECISIONS_ROUTING_KEY, Topology};
use paysys_runtime::backoff::{self, Backoff};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::metrics::{Metrics, OutcomeLabels, ReasonLabels};
use crate::store::decisions::{self, Applied};

/// Largest batch applied in one statement.
const BATCH: usize = 128;
/// Batches in progress at once: one commits while the next is applied.
const BATCHES: usize = 4;
/// Unacknowledged deliveries the broker sends ahead: enough to fill every batch.
const PREFETCH: u16 = (BATCH * BATCHES) as u16;
/// First pause before applying again a round the database could not take (then the
/// services' backoff policy, up to its longest wait).
const HOLD_FIRST_WAIT: Duration = Duration::from_millis(250);
/// How often a consumer with deliveries in hand checks that its connection still stands.
const LIVENESS_CHECK: Duration = Duration::from_millis(250);
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

async fn settle_one(delivery: &Delivery, settle: Settle) -> lapin::Result<()> {
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

/// Returns once `connection` or `channel` has failed. An ack on a dead connection may never
/// complete, and while the ack of one batch waits, the deliveries' stream (which would report
/// the failure) is not polled: without this watch a broker cut left the consumer waiting
/// for good, with every later decision unapplied until the API restarted.
async fn until_lost(connection: &lapin::Connection, channel: &Channel) {
    while connection.status().connected() && channel.status().connected() {
        tokio::time::sleep(LIVENESS_CHECK).await;
    }
}

/// Acks `last` and every earlier delivery of its channel still unsettled (`multiple`). The
/// caller guarantees that those are exactly the deliveries applied with it.
async fn ack_through(last: Option<Delivery>) -> lapin::Result<()> {
    if let Some(last) = last {
        last.acker.ack(BasicAckOptions { multiple: true }).await?;
    }
    Ok(())
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
            amqp::close(&connection).await;
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
        // Nothing is in hand yet: a stop ends the setup at once (a blocked or stalled broker
        // may never answer it).
        let (channel, consumer) = tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            subscribed = self.subscribe(connection) => subscribed?,
        };
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
        // `buffered` applies up to BATCHES batches at once and hands them over in delivery
        // order, so when a batch is acknowledged every earlier delivery is settled already,
        // and its `multiple` ack settles exactly this batch's decisions.
        let work = consumer
            .take_until(ending())
            .ready_chunks(BATCH)
            .map(|deliveries| {
                let (this, channel) = (self.clone(), channel.clone());
                async move {
                    let deliveries = deliveries.into_iter().collect::<lapin::Result<_>>()?;
                    this.handle(&channel, deliveries).await
                }
            })
            .buffered(BATCHES)
            .for_each(|handled| {
                let broken = broken.clone();
                async move {
                    let acked = match handled {
                        Ok(last) => ack_through(last).await,
                        Err(error) => Err(error),
                    };
                    if let Err(error) = acked {
                        tracing::warn!(%error, "decision channel failed");
                        broken.cancel();
                    }
                }
            });
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
            _ = until_lost(connection, &channel) => {
                tracing::warn!("lost the broker with decisions in hand; the broker will redeliver them");
                broken.cancel();
            }
        }
        if stop.is_cancelled() && !broken.is_cancelled() {
            amqp::close_channel(connection, &channel).await;
            return Ok(());
        }
        anyhow::bail!("the decisions consumer stopped")
    }

    /// Declares the topology, retires the legacy queues and starts consuming decisions.
    async fn subscribe(
        &self,
        connection: &lapin::Connection,
    ) -> lapin::Result<(Channel, Consumer)> {
        let channel = amqp::open_confirm_channel(connection, &self.topology).await?;
        // An upgrade from classic queues: move what they hold into the queues declared above.
        amqp::legacy_queues::retire_or_log(connection, &self.topology).await;
        channel
            .basic_qos(PREFETCH, BasicQosOptions::default())
            .await?;
        let consumer = channel
            .basic_consume(
                self.topology.decisions_queue.as_str().into(),
                "payments-api".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        Ok((channel, consumer))
    }

    /// Applies a batch of deliveries. Those dead-lettered or requeued are settled here, one
    /// by one; the others are applied, and the last of them is returned for [`ack_through`].
    async fn handle(
        &self,
        channel: &Channel,
        deliveries: Vec<Delivery>,
    ) -> lapin::Result<Option<Delivery>> {
        let mut decoded = Vec::with_capacity(deliveries.len());
        for delivery in deliveries {
            match DecisionMessage::decode(&delivery.data) {
                Ok(decision) => decoded.push((delivery, decision)),
                Err(error) => {
                    let settle = self
                        .dead_letter(channel, &delivery, &error.to_string(), "malformed")
                        .await?;
                    settle_one(&delivery, settle).await?;
                }
            }
        }
        // A redelivered decision may share a batch with its first delivery: such repeats go
        // in a later round, so each statement touches a payment at most once.
        let mut applied = Vec::new();
        while !decoded.is_empty() {
            let mut seen = HashSet::new();
            let (round, later): (Vec<_>, Vec<_>) = decoded
                .into_iter()
                .partition(|(_, decision)| seen.insert(decision.payment_id));
            applied.extend(self.apply(channel, round).await?);
            decoded = later;
        }
        Ok(applied
            .into_iter()
            .max_by_key(|delivery| delivery.delivery_tag))
    }

    /// Applies one round; returns the deliveries applied (to be acked), having settled the
    /// others.
    async fn apply(
        &self,
        channel: &Channel,
        round: Vec<(Delivery, DecisionMessage)>,
    ) -> lapin::Result<Vec<Delivery>> {
        let decisions: Vec<DecisionMessage> =
            round.iter().map(|(_, decision)| decision.clone()).collect();
        // A database outage holds the round, unacked, and retries: requeueing would count
        // against the quorum queue's delivery limit and could dead-letter good decisions.
        // Shutdown and a broken channel still end it (see DRAIN_TIMEOUT in `consume`).
        let mut waits = Backoff::new(backoff::policy().with_min_delay(HOLD_FIRST_WAIT));
        let applied = loop {
            let applied = match self.pool.acquire().await {
                Ok(mut conn) => decisions::apply_many(&mut conn, &decisions).await,
                Err(error) => Err(error),
            };
            match applied {
                Ok(applied) => break applied,
                Err(error) => {
                    let pause = waits.next_wait();
                    tracing::warn!(%error, decisions = round.len(), retry_in_ms = pause.as_millis() as u64, "cannot apply decisions; holding them until the database answers");
                    tokio::time::sleep(pause).await;
                }
            }
        };
        let mut to_ack = Vec::with_capacity(round.len());
        for ((delivery, decision), applied) in round.into_iter().zip(applied) {
            let label = match applied {
                Applied::Decided { since_creation } => {
                    self.metrics
                        .decision_latency
                        .observe(since_creation.as_secs_f64());
                    decision.outcome.as_str()
                }
                Applied::Duplicate => "duplicate",
                Applied::Ignored { current } => {
                    tracing::info!(payment_id = %decision.payment_id, %current, "decision for a payment no longer pending recorded and ignored");
                    "ignored"
                }
                Applied::UnknownPayment => {
                    let settle = self
                        .dead_letter(channel, &delivery, "unknown payment", "unknown_payment")
                        .await?;
                    settle_one(&delivery, settle).await?;
                    continue;
                }
            };
            self.metrics
                .decisions_applied
                .get_or_create(&OutcomeLabels {
                    outcome: label.to_owned(),
                })
                .inc();
            to_ack.push(delivery);
        }
        Ok(to_ack)
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
