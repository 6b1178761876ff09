//! Risk engine throughput: consume → decide → publish (confirmed) → ack, in decisions/s.
//!
//! `cargo bench -p risk-engine --bench throughput` against the RabbitMQ at `AMQP_URL`
//! (default 127.0.0.1:5672). Pre-loads `BENCH_PAYMENTS` (50,000) payment messages into a
//! private queue prefix, starts the engine in-process for each prefetch in `BENCH_PREFETCH`
//! (100,200,300), and times it from start until every decision is on the decisions queue and
//! every payment acked. Each prefetch runs rules mode, then model mode on the same load (the
//! same rule set plus the model in `BENCH_MODEL_DIR`, default the test fixture: 200 trees, 31
//! leaves), and prints model/rules (target >= 0.8). First, in-engine scoring latency: features
//! and model score per payment (target p99 <= 100 µs), and a whole `decide` in each mode, over
//! `BENCH_SCORING_ROWS` (100,000) payments, in an hdrhistogram. `BENCH_LOG=1` formats the two
//! log lines per payment as the service does (written to a sink, so the terminal is not the
//! bottleneck).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use hdrhistogram::Histogram;
use lapin::options::{BasicConsumeOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use paysys_amqp as amqp;
use paysys_core::features::FeatureVector;
use paysys_core::messages::SCHEMA_VERSION;
use paysys_core::risk_rules::{RiskRules, VelocityRules};
use paysys_core::topology::PAYMENT_ROUTING_KEY;
use paysys_core::{History, PaymentData, PaymentMessage, Velocity};
use paysys_testkit::TestBroker;
use risk_engine::consumer::Consumer;
use risk_engine::decide::{Decider, ModelMode};
use risk_engine::metrics::Metrics;
use risk_engine::model::Model;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A realistic rule set: every rule configured, so every payment is fully evaluated.
fn rules() -> Decider {
    Decider::Rules(Box::new(compiled_rules()))
}

/// The same rules (hard ones still apply) and the model.
fn model_mode(model: &Arc<Model>) -> Decider {
    Decider::Model(Box::new(ModelMode {
        rules: compiled_rules(),
        model: model.clone(),
    }))
}

fn load_model() -> Arc<Model> {
    let dir = std::env::var("BENCH_MODEL_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/model"));
    Arc::new(Model::load(&dir).unwrap_or_else(|e| panic!("BENCH_MODEL_DIR: {e}")))
}

fn compiled_rules() -> risk_engine::rules::CompiledRules {
    let raw = RiskRules {
        version: "bench".into(),
        allowed_currencies: vec!["USD".into(), "EUR".into(), "GBP".into()],
        max_amount: BTreeMap::from([("USD".into(), "10000".into())]),
        blocked_user_ids: (0..1000).map(|_| Uuid::new_v4()).collect(),
        blocked_payee_ids: (0..1000).map(|_| Uuid::new_v4()).collect(),
        blocked_payment_method_ids: (0..1000).map(|_| Uuid::new_v4()).collect(),
        velocity: Some(VelocityRules {
            window_seconds: 3600,
            max_count: Some(10),
            max_total: BTreeMap::from([("USD".into(), "20000".into())]),
        }),
        ..Default::default()
    };
    risk_engine::rules::compile(&raw).unwrap()
}

fn payment(i: u64) -> PaymentMessage {
    PaymentMessage {
        schema_version: SCHEMA_VERSION,
        payment_id: Uuid::now_v7(),
        payment_data: PaymentData {
            amount: rust_decimal::Decimal::new(1000 + (i % 5000) as i64 * 37, 2),
            currency: "USD".parse().unwrap(),
            user_id: Uuid::new_v4(),
            payee_id: Uuid::new_v4(),
            payment_method_id: Uuid::new_v4(),
            created_at: Some(chrono::Utc::now()),
        },
        velocity: Some(Velocity {
            window_seconds: 3600,
            count: i % 12,
            total_minor: (i % 7) as i64 * 400_000,
        }),
        // Varied, so the trees take many paths.
        history: Some(History {
            payer_payment_count: i % 40,
            payer_first_payment_at: Some(
                chrono::Utc::now() - chrono::Duration::seconds((i % 5000) as i64 * 1000),
            ),
            payer_currency_count: i % 30,
            payer_currency_total_minor: (i % 30) as i64 * 7_000,
            new_payee: i.is_multiple_of(3),
            new_payment_method: i.is_multiple_of(10),
            method_payment_count: i % 25,
            payee_window_count: i % 9,
        }),
    }
}

/// p50 and p99 of `f` over `payments`, in µs.
fn latency(payments: &[PaymentMessage], mut f: impl FnMut(&PaymentMessage)) -> (f64, f64) {
    let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).unwrap();
    for p in payments {
        let started = Instant::now();
        f(p);
        h.record(started.elapsed().as_nanos().max(1) as u64)
            .unwrap();
    }
    let us = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    (us(0.5), us(0.99))
}

fn scoring_latency(model: &Arc<Model>, rows: u64) {
    let payments: Vec<PaymentMessage> = (0..rows).map(payment).collect();
    let now = chrono::Utc::now();
    let mut declined = 0_u64;
    let (p50, p99) = latency(&payments, |p| {
        let score = model.score(&FeatureVector::of(p, now));
        declined += u64::from(model.declines(score));
    });
    println!(
        "in-engine scoring (features + {} score), {rows} payments: p50 {p50:.1} µs, p99 {p99:.1} µs \
         (target p99 <= 100 µs; {declined} at or above the threshold)",
        model.version
    );
    for (name, decider) in [("rules", rules()), ("model", model_mode(model))] {
        let (p50, p99) = latency(&payments, |p| {
            std::hint::black_box(decider.decide(p).unwrap());
        });
        println!("whole decide, {name} mode: p50 {p50:.1} µs, p99 {p99:.1} µs");
    }
}

async fn preload(broker: &TestBroker, channel: &lapin::Channel, n: u64) -> f64 {
    let started = Instant::now();
    let bodies: Vec<Vec<u8>> = (0..n).map(|i| payment(i).encode()).collect();
    for chunk in bodies.chunks(1000) {
        let mut confirms = Vec::with_capacity(chunk.len());
        for body in chunk {
            confirms.push(
                amqp::publish(
                    channel,
                    &broker.topology.payments_exchange,
                    PAYMENT_ROUTING_KEY,
                    body,
                    amqp::persistent_json("bench", FieldTable::default()),
                )
                .await
                .expect("publish"),
            );
        }
        for confirm in confirms {
            amqp::check_confirmation(confirm.await.expect("confirm")).expect("confirmed");
        }
    }
    n as f64 / started.elapsed().as_secs_f64()
}

/// Counts decisions arriving on the decisions queue (auto-ack: this stands in for the API).
async fn count_decisions(broker: &TestBroker, counted: Arc<AtomicU64>) -> lapin::Connection {
    let (connection, channel) = broker.channel().await;
    let mut consumer = channel
        .basic_consume(
            broker.topology.decisions_queue.as_str().into(),
            "bench-counter".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("consume decisions");
    tokio::spawn(async move {
        while let Some(Ok(_)) = consumer.next().await {
            counted.fetch_add(1, Ordering::Relaxed);
        }
    });
    connection
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// One timed run; returns decisions/s.
async fn run_once(n: u64, prefetch: u16, mode: &str, decider: Decider) -> f64 {
    let broker = TestBroker::new();
    let (_connection, channel) = broker.channel().await;
    let publish_rate = preload(&broker, &channel, n).await;
    let counted = Arc::new(AtomicU64::new(0));
    let _counter = count_decisions(&broker, counted.clone()).await;
    let metrics = Arc::new(Metrics::new());
    let stop = CancellationToken::new();
    let consumer = Consumer {
        amqp_url: broker.url.clone(),
        topology: broker.topology.clone(),
        prefetch,
        decider: Arc::new(decider),
        metrics: metrics.clone(),
        consuming: Arc::new(AtomicBool::new(false)),
    };
    let started = Instant::now();
    let engine = tokio::spawn(consumer.run(stop.clone()));
    let decided = || metrics.decided("approved") + metrics.decided("declined");
    while counted.load(Ordering::Relaxed) < n || decided() < n {
        if started.elapsed() > Duration::from_secs(600) {
            panic!("timed out at {} decisions", counted.load(Ordering::Relaxed));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    stop.cancel();
    engine.await.unwrap();
    let left = channel
        .queue_declare(
            broker.topology.payments_queue.as_str().into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap()
        .message_count();
    assert_eq!(left, 0, "every payment acked");
    let text = metrics.render();
    let mean_ms = 1000.0 * metric(&text, "paysys_risk_decision_duration_seconds_sum")
        / metric(&text, "paysys_risk_decision_duration_seconds_count");
    let rate = n as f64 / elapsed;
    println!(
        "prefetch {prefetch:>3}, {mode:<5} mode: {n} payments in {elapsed:.2} s = {rate:.0} decisions/s \
         (declined {}, mean in-engine time {mean_ms:.1} ms; preload {publish_rate:.0} msg/s)",
        metrics.decided("declined"),
    );
    broker.delete().await;
    rate
}

#[tokio::main]
async fn main() {
    let n: u64 = env_or("BENCH_PAYMENTS", 50_000);
    let prefetches: Vec<u16> = std::env::var("BENCH_PREFETCH")
        .unwrap_or_else(|_| "100,200,300".into())
        .split(',')
        .filter_map(|p| p.trim().parse().ok())
        .collect();
    let log = std::env::var("BENCH_LOG").is_ok_and(|v| v == "1");
    if log {
        tracing_subscriber::fmt()
            .with_env_filter("info")
            .with_writer(std::io::sink)
            .init();
    }
    let model = load_model();
    scoring_latency(&model, env_or("BENCH_SCORING_ROWS", 100_000));
    println!(
        "risk-engine throughput (consume -> decide -> publish confirmed -> ack), rules and model \
         mode, logging {}",
        if log { "on (to a sink)" } else { "off" }
    );
    for prefetch in prefetches {
        let rules_rate = run_once(n, prefetch, "rules", rules()).await;
        let model_rate = run_once(n, prefetch, "model", model_mode(&model)).await;
        println!(
            "prefetch {prefetch:>3}: model/rules throughput = {:.2} (target >= 0.80)",
            model_rate / rules_rate
        );
    }
}
