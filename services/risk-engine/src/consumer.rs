//! The consume → decide → publish → ack loop.
//!
//! Reliability, in order of the RabbitMQ reliability guide:
//! - manual acks, prefetch `RISK_PREFETCH`: a payment is acked only after the broker has
//!   confirmed its decision (persistent, mandatory, publisher confirms), so a crash at any
//!   point redelivers the payment and at worst publishes the same decision twice;
//! - pipelined: each delivery is its own future (decide, publish, await confirm, ack) in a
//!   `FuturesUnordered`, so up to `prefetch` confirms are outstanding at once instead of one
//!   round trip per payment; the prefetch bounds how many are in hand;
//! - poison messages (undecodable, unknown schema version) are dead-lettered with the reason
//!   and acked only once the dead letter is confirmed, never requeued forever;
//! - on any connection or channel error, everything in hand is dropped unacked (the broker
//!   redelivers it) and the loop reconnects with backoff.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Connection};
use paysys_amqp::{self as amqp, PublishError};
use paysys_core::PaymentMessage;
use paysys_core::messages::DecodeError;
use paysys_core::topology::{DEAD_PAYMENTS_ROUTING_KEY, DECISION_ROUTING_KEY, Topology};
use paysys_runtime::backoff::{self, Backoff};
use tokio_util::sync::CancellationToken;

use crate::decide::Decider;
use crate::metrics::Metrics;

/// How long a graceful stop waits for the decisions in hand to be confirmed and acked.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(20);
/// First pause before publishing again a decision the broker refused, so a persistent
/// refusal (a deleted queue) does not become a hot loop; doubles up to the max.
const REFUSED_BACKOFF: Duration = Duration::from_secs(1);
const REFUSED_BACKOFF_MAX: Duration = Duration::from_secs(10);
/// First pause between broker sessions; it doubles (to backoff::LONGEST) while sessions fail
/// before consuming.
const MIN_PAUSE: Duration = Duration::from_millis(200);
/// Longest body quoted in the log line of a message that cannot be decoded.
const MAX_LOGGED_POISON: usize = 2048;

pub struct Consumer {
    pub amqp_url: String,
    pub topology: Topology,
    pub prefetch: u16,
    pub decider: Arc<Decider>,
    pub metrics: Arc<Metrics>,
    /// True while consuming (for `/readyz`).
    pub consuming: Arc<AtomicBool>,
}

/// A broker session ended by an error; `consumed` says whether it got as far as consuming.
struct Broken {
    error: anyhow::Error,
    consumed: bool,
}

impl Consumer {
    /// Consumes until `stop` is cancelled, then finishes and acks what is in hand.
    pub async fn run(self, stop: CancellationToken) {
        let this = Arc::new(self);
        let mut pauses = Backoff::new(backoff::policy().with_min_delay(MIN_PAUSE));
        while !stop.is_cancelled() {
            let connection = tokio::select! {
                _ = stop.cancelled() => break,
                c = amqp::connect_with_backoff(&this.amqp_url, "risk-engine") => c,
            };
            let ended = this.session(&connection, &stop).await;
            this.consuming.store(false, Ordering::SeqCst);
            // Closing a dead or blocked connection can wait on a broker that never answers.
            amqp::close(&connection).await;
            let Err(broken) = ended else { break };
            this.metrics.reconnects.inc();
            if broken.consumed {
                pauses.reset();
            }
            let pause = pauses.next_wait();
            tracing::warn!(error = %broken.error, retry_in_ms = pause.as_millis() as u64, "lost the broker; payments in hand will be redelivered; reconnecting");
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(pause) => {}
            }
        }
        tracing::info!("risk engine consumer stopped");
    }

    /// One connection's worth of consuming. `Ok` means a graceful stop.
    async fn session(
        self: &Arc<Self>,
        connection: &Connection,
        stop: &CancellationToken,
    ) -> Result<(), Broken> {
        // Nothing is in hand yet: a stop ends the setup at once (a blocked or stalled broker
        // may never answer it).
        let subscribed = tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            subscribed = self.subscribe(connection) => subscribed,
        };
        let (consume_channel, publish_channel, mut deliveries) =
            subscribed.map_err(|error| Broken {
                error: error.into(),
                consumed: false,
            })?;
        self.consuming.store(true, Ordering::SeqCst);
        tracing::info!(queue = %self.topology.payments_queue, prefetch = self.prefetch, mode = self.decider.mode_name(), rules_version = %self.decider.rules_version(), "consuming payments");

        let mut in_hand: FuturesUnordered<_> = FuturesUnordered::new();
        let broken = |error: anyhow::Error| Broken {
            error,
            consumed: true,
        };
        loop {
            tokio::select! {
                Some(done) = in_hand.next(), if !in_hand.is_empty() => {
                    let done: anyhow::Result<()> = done;
                    done.map_err(broken)?;
                }
                _ = stop.cancelled() => break,
                delivery = deliveries.next() => match delivery {
                    Some(Ok(delivery)) => {
                        in_hand.push(self.clone().handle(publish_channel.clone(), delivery));
                    }
                    Some(Err(error)) => return Err(broken(error.into())),
                    None => return Err(broken(anyhow::anyhow!("the broker cancelled the consumer"))),
                },
            }
        }

        // Graceful stop: no new deliveries, finish those in hand. Deliveries the client has
        // buffered but not handed out are returned to the queue when the channel closes.
        self.consuming.store(false, Ordering::SeqCst);
        let tag = deliveries.tag();
        let cancel = consume_channel.basic_cancel(tag, BasicCancelOptions::default());
        match tokio::time::timeout(amqp::CLOSE_TIMEOUT, cancel).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::warn!(%error, "cannot cancel the consumer"),
            Err(_) => tracing::warn!("the broker did not answer the consumer's cancel"),
        }
        tracing::info!(
            in_hand = in_hand.len(),
            "stopping: finishing payments in hand"
        );
        let drain = async {
            while let Some(done) = in_hand.next().await {
                done?;
            }
            anyhow::Ok(())
        };
        // A blocked connection (a memory or disk alarm) confirms nothing until the alarm
        // clears: waiting for it would only spend the pod's grace period.
        let blocked = async {
            while !connection.status().blocked() {
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        };
        tokio::select! {
            finished = tokio::time::timeout(DRAIN_TIMEOUT, drain) => match finished {
                Ok(Ok(())) => tracing::info!("payments in hand finished"),
                Ok(Err(error)) => {
                    tracing::warn!(%error, "broker failed while finishing; unfinished payments will be redelivered")
                }
                Err(_) => {
                    tracing::warn!("timed out finishing; unfinished payments will be redelivered")
                }
            },
            _ = blocked => {
                tracing::warn!("RabbitMQ blocks publishing (a resource alarm); payments in hand will be redelivered")
            }
        }
        amqp::close_channel(connection, &publish_channel).await;
        amqp::close_channel(connection, &consume_channel).await;
        Ok(())
    }

    /// Declares the topology on two channels (acks flow on the consuming one, confirms on the
    /// publishing one), retires the legacy queues and starts consuming payments.
    async fn subscribe(
        &self,
        connection: &Connection,
    ) -> lapin::Result<(Channel, Channel, lapin::Consumer)> {
        let consume_channel = connection.create_channel().await?;
        amqp::declare_topology(&consume_channel, &self.topology).await?;
        consume_channel
            .basic_qos(self.prefetch, BasicQosOptions::default())
            .await?;
        let publish_channel = amqp::open_confirm_channel(connection, &self.topology).await?;
        // An upgrade from classic queues: move what they hold into the queues declared above.
        amqp::legacy_queues::retire_or_log(connection, &self.topology).await;
        let deliveries = consume_channel
            .basic_consume(
                self.topology.payments_queue.as_str().into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        Ok((consume_channel, publish_channel, deliveries))
    }

    /// Handles one delivery to its ack (or requeue). An error means the connection or a
    /// channel failed, and ends the session.
    async fn handle(self: Arc<Self>, channel: Channel, delivery: Delivery) -> anyhow::Result<()> {
        let _counted = InFlight::enter(&self.metrics);
        self.handle_inner(&channel, &delivery, Instant::now()).await
    }

    async fn handle_inner(
        &self,
        channel: &Channel,
        delivery: &Delivery,
        received: Instant,
    ) -> anyhow::Result<()> {
        let payment = match PaymentMessage::decode(&delivery.data) {
            Ok(payment) => payment,
            Err(error) => return self.dead_letter(channel, delivery, &error).await,
        };
        // The original demo's line, with the message as it arrived.
        tracing::info!(payment_id = %payment.payment_id, "Received message: {}", String::from_utf8_lossy(&delivery.data));
        let verdict = match self.decider.decide(&payment) {
            Ok(verdict) => verdict,
            Err(error) => {
                let error = DecodeError::Malformed(format!("payment_data.amount {error}"));
                return self.dead_letter(channel, delivery, &error).await;
            }
        };
        let decision = &verdict.decision;
        let body = decision.encode();
        self.until_accepted(|| {
            publish_and_confirm(
                channel,
                &self.topology.decisions_exchange,
                DECISION_ROUTING_KEY,
                &body,
                amqp::persistent_json(&decision.payment_id.to_string(), FieldTable::default()),
            )
        })
        .await?;
        ack(delivery).await?;
        let outcome = decision.outcome.as_str();
        self.metrics.count_decision(outcome);
        self.metrics.observe_models(decision);
        self.metrics
            .decision_duration
            .observe(received.elapsed().as_secs_f64());
        // The model fields are recorded only when present, so the other modes' lines are as
        // they always were.
        tracing::info!(
            payment_id = %decision.payment_id,
            outcome,
            score = decision.score,
            rules_version = %decision.rules_version,
            rules = ?decision.reasons.iter().map(|r| r.rule.as_str()).collect::<Vec<_>>(),
            model_version = decision.model.as_ref().map(|m| m.version.as_str()),
            model_score = decision.model.as_ref().map(|m| m.score),
            shadow_version = decision.shadow.as_ref().map(|m| m.version.as_str()),
            shadow_score = decision.shadow.as_ref().map(|m| m.score),
            "Payment {} {}. {}",
            decision.payment_id,
            outcome,
            verdict.why
        );
        Ok(())
    }

    /// Moves a poison message to the dead-letter queue with its reason, then acks it.
    async fn dead_letter(
        &self,
        channel: &Channel,
        delivery: &Delivery,
        error: &DecodeError,
    ) -> anyhow::Result<()> {
        let body = String::from_utf8_lossy(&delivery.data);
        let quoted: String = body.chars().take(MAX_LOGGED_POISON).collect();
        tracing::info!("Received message: {quoted}");
        let reason = error.to_string();
        self.until_accepted(|| async {
            match amqp::dead_letter(
                channel,
                &self.topology,
                DEAD_PAYMENTS_ROUTING_KEY,
                &self.topology.payments_queue,
                &delivery.data,
                &reason,
            )
            .await
            {
                Ok(()) => Ok(Ok(())),
                Err(PublishError::Broker(error)) => Err(error),
                Err(refused) => Ok(Err(refused)),
            }
        })
        .await?;
        ack(delivery).await?;
        self.metrics.count_dead_letter(dead_letter_label(error));
        tracing::warn!(%reason, queue = %self.topology.payments_dead_queue, "message dead-lettered");
        Ok(())
    }

    /// Publishes until the broker accepts. A refusal (nack, or unroutable because a queue
    /// or binding is missing) must not ack the payment, and requeueing it would count against
    /// the queue's delivery limit and could dead-letter a good payment: hold it and publish
    /// again after a pause. A broken channel ends the session (the payment is redelivered).
    async fn until_accepted<F, Fut>(&self, mut publish: F) -> anyhow::Result<()>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = lapin::Result<Result<(), PublishError>>>,
    {
        let mut waits = Backoff::new(
            backoff::policy()
                .with_min_delay(REFUSED_BACKOFF)
                .with_max_delay(REFUSED_BACKOFF_MAX),
        );
        loop {
            match publish().await? {
                Ok(()) => return Ok(()),
                Err(refused) => {
                    self.metrics.publish_failures.inc();
                    let pause = waits.next_wait();
                    tracing::error!(error = %refused, retry_in_ms = pause.as_millis() as u64, "broker refused a publish; holding the payment and publishing again");
                    tokio::time::sleep(pause).await;
                }
            }
        }
    }
}

/// Counts a delivery in `in_flight` for as long as its handling future lives, including when
/// a broken session drops it half-way.
struct InFlight(prometheus_client::metrics::gauge::Gauge);

impl InFlight {
    fn enter(metrics: &Metrics) -> Self {
        metrics.in_flight.inc();
        Self(metrics.in_flight.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Publishes and waits for the broker's verdict. The outer error is a broken connection
/// (ends the session); the inner one a refusal (nack or returned as unroutable).
async fn publish_and_confirm(
    channel: &Channel,
    exchange: &str,
    routing_key: &str,
    body: &[u8],
    properties: lapin::BasicProperties,
) -> lapin::Result<Result<(), PublishError>> {
    let confirm = match amqp::publish(channel, exchange, routing_key, body, properties).await {
        Ok(confirm) => confirm,
        Err(PublishError::Broker(error)) => return Err(error),
        Err(other) => return Ok(Err(other)),
    };
    Ok(amqp::check_confirmation(confirm.await?))
}

/// Acks, treating an ack the channel can no longer send as a broken session.
async fn ack(delivery: &Delivery) -> anyhow::Result<()> {
    if delivery.acker.ack(BasicAckOptions::default()).await? {
        Ok(())
    } else {
        anyhow::bail!("the channel closed before the payment could be acked")
    }
}

fn dead_letter_label(error: &DecodeError) -> &'static str {
    match error {
        DecodeError::TooLarge(_) => "too_large",
        DecodeError::Malformed(_) => "malformed",
        DecodeError::UnsupportedVersion(_) => "unsupported_version",
    }
}
