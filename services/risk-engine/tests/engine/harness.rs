//! Runs the engine in-process against a private topology and talks to it through the broker.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use paysys_core::messages::SCHEMA_VERSION;
use paysys_core::topology::PAYMENT_ROUTING_KEY;
use paysys_core::{DecisionMessage, PaymentData, PaymentMessage, Velocity};
use paysys_testkit::TestBroker;
use risk_engine::consumer::Consumer;
use risk_engine::decide::Decider;
use risk_engine::metrics::Metrics;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub const WAIT: Duration = Duration::from_secs(20);

pub struct Engine {
    pub broker: TestBroker,
    pub metrics: Arc<Metrics>,
    pub consuming: Arc<AtomicBool>,
    pub channel: lapin::Channel,
    _connection: lapin::Connection,
    stop: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl Engine {
    /// Declares a fresh topology; the engine is not running yet.
    pub async fn prepare() -> Engine {
        Engine::prepare_on(TestBroker::new()).await
    }

    /// As [`Engine::prepare`], on `broker` (a private node, say).
    pub async fn prepare_on(broker: TestBroker) -> Engine {
        let (connection, channel) = broker.channel().await;
        Engine {
            broker,
            metrics: Arc::new(Metrics::new()),
            consuming: Arc::new(AtomicBool::new(false)),
            channel,
            _connection: connection,
            stop: CancellationToken::new(),
            task: None,
        }
    }

    pub async fn start(decider: Decider) -> Engine {
        let mut engine = Engine::prepare().await;
        let url = engine.broker.url.clone();
        engine.run(decider, &url, 200).await;
        engine
    }

    /// Starts the consumer against `url` (the broker, or a proxy in front of it).
    pub async fn run(&mut self, decider: Decider, url: &str, prefetch: u16) {
        let consumer = Consumer {
            amqp_url: url.to_owned(),
            topology: self.broker.topology.clone(),
            prefetch,
            decider: Arc::new(decider),
            metrics: self.metrics.clone(),
            consuming: self.consuming.clone(),
        };
        self.task = Some(tokio::spawn(consumer.run(self.stop.clone())));
        let consuming = self.consuming.clone();
        paysys_testkit::eventually(WAIT, || {
            let up = consuming.load(Ordering::SeqCst);
            async move { up.then_some(()) }
        })
        .await
        .expect("the engine starts consuming");
    }

    /// Stops gracefully and waits for the consumer to finish; [`Engine::run`] may start
    /// another one afterwards.
    pub async fn stop(&mut self) {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            tokio::time::timeout(WAIT, task)
                .await
                .expect("the engine stops in time")
                .expect("the engine task does not panic");
        }
        self.stop = CancellationToken::new();
    }

    pub async fn publish(&self, payment: &PaymentMessage) {
        self.publish_raw(&payment.encode()).await;
    }

    /// Publishes a body to the payments exchange, as the API (or a user by hand) would.
    pub async fn publish_raw(&self, body: &[u8]) {
        paysys_amqp::publish_confirmed(
            &self.channel,
            &self.broker.topology.payments_exchange,
            PAYMENT_ROUTING_KEY,
            body,
            paysys_amqp::persistent_json("test", FieldTable::default()),
        )
        .await
        .expect("publish a payment");
    }

    /// Publishes many payments with pipelined confirms.
    pub async fn publish_all(&self, payments: &[PaymentMessage]) {
        for chunk in payments.chunks(500) {
            let mut confirms = Vec::with_capacity(chunk.len());
            for payment in chunk {
                confirms.push(
                    paysys_amqp::publish(
                        &self.channel,
                        &self.broker.topology.payments_exchange,
                        PAYMENT_ROUTING_KEY,
                        &payment.encode(),
                        paysys_amqp::persistent_json("test", FieldTable::default()),
                    )
                    .await
                    .expect("publish"),
                );
            }
            for confirm in confirms {
                paysys_amqp::check_confirmation(confirm.await.expect("confirm"))
                    .expect("payment confirmed");
            }
        }
    }

    /// The next decision on the decisions queue, if one arrives within `timeout`.
    pub async fn next_decision(&self, timeout: Duration) -> Option<DecisionMessage> {
        let message = self
            .broker
            .get(
                &self.channel,
                &self.broker.topology.decisions_queue,
                timeout,
            )
            .await?;
        Some(DecisionMessage::decode(&message.delivery.data).expect("a valid decision"))
    }

    /// Collects decisions until every id in `ids` has at least one (or `WAIT` passes); returns
    /// all decisions seen per id, duplicates included.
    pub async fn decisions_for(&self, ids: &[Uuid]) -> HashMap<Uuid, Vec<DecisionMessage>> {
        let mut seen: HashMap<Uuid, Vec<DecisionMessage>> = HashMap::new();
        let deadline = tokio::time::Instant::now() + WAIT * 3;
        while ids.iter().any(|id| !seen.contains_key(id)) {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                break;
            }
            if let Some(decision) = self.next_decision(left.min(Duration::from_secs(1))).await {
                seen.entry(decision.payment_id).or_default().push(decision);
            }
        }
        seen
    }

    /// Takes every payment waiting in `queue` (until it stays empty for a second): their ids.
    pub async fn take_all(&self, queue: &str) -> HashSet<Uuid> {
        use futures::StreamExt;
        let mut consumer = self
            .channel
            .basic_consume(
                queue.into(),
                "take-all".into(),
                lapin::options::BasicConsumeOptions {
                    no_ack: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .expect("consume");
        let mut ids = HashSet::new();
        while let Ok(Some(delivery)) =
            tokio::time::timeout(Duration::from_secs(1), consumer.next()).await
        {
            let delivery = delivery.expect("delivery");
            ids.insert(
                PaymentMessage::decode(&delivery.data)
                    .expect("a payment")
                    .payment_id,
            );
        }
        ids
    }

    /// Ready messages in a queue (unacked ones are not counted).
    pub async fn queue_len(&self, queue: &str) -> u32 {
        self.channel
            .queue_declare(
                queue.into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .expect("passive declare")
            .message_count()
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// A clean payment: approved by the default rules.
pub fn payment() -> PaymentMessage {
    PaymentMessage {
        schema_version: SCHEMA_VERSION,
        payment_id: Uuid::now_v7(),
        payment_data: PaymentData {
            amount: "70.5".parse().unwrap(),
            currency: "USD".parse().unwrap(),
            user_id: Uuid::new_v4(),
            payee_id: Uuid::new_v4(),
            payment_method_id: Uuid::new_v4(),
            created_at: Some(chrono::Utc::now()),
        },
        velocity: Some(Velocity {
            window_seconds: 3600,
            count: 0,
            total_minor: 0,
        }),
        history: None,
    }
}

/// The part of a decision that must be identical on every delivery of a payment.
pub fn essence(d: &DecisionMessage) -> (Uuid, &'static str, u32, Vec<(String, String)>, String) {
    (
        d.payment_id,
        d.outcome.as_str(),
        d.score,
        d.reasons
            .iter()
            .map(|r| (r.rule.clone(), r.detail.clone()))
            .collect(),
        d.rules_version.clone(),
    )
}

impl Engine {
    /// Waits until the engine has counted `n` decisions (it counts after the ack, which
    /// follows the decision's arrival on the queue).
    pub async fn wait_decided(&self, n: u64) {
        let metrics = self.metrics.clone();
        paysys_testkit::eventually(WAIT * 3, || {
            let decided = metrics.decided("approved") + metrics.decided("declined");
            async move { (decided >= n).then_some(()) }
        })
        .await
        .unwrap_or_else(|| panic!("{n} payments decided"));
    }

    /// Stops the engine and deletes the test's queues and exchanges.
    pub async fn finish(mut self) {
        self.stop().await;
        self.broker.delete().await;
    }
}
