//! Benchmark of webhook delivery (not a test: it prints numbers, asserts nothing timed).
//!
//! Starts the `payments-api` binary against the real PostgreSQL with webhooks on and receivers
//! on 127.0.0.1 that verify every signature, then:
//! 1. creates payments without any endpoint (the API's created/s with only the triggers);
//! 2. the same with one subscribed endpoint: created/s, dispatch events/s (first to last
//!    delivery) and event lag (the change's commit to the receiver) p50/p99/max;
//! 3. dispatch from a backlog: the endpoint paused (in the database) while payments are made,
//!    then resumed; its events/s from then to the last arrival (the dispatcher alone);
//! 4. 100 live endpoints, then the same with 900 dead ones (closed ports) beside them: the
//!    lag of deliveries to the live ones, with and without the dead (registered just before
//!    the payments, so each is tried for the first time during the run), then once more
//!    beside the same dead ones, now known to fail.
//!
//! `cargo bench -p payments-api --bench webhooks` (env: BENCH_PAYMENTS=5000,
//! BENCH_CLIENTS=32, BENCH_DEAD_PAYMENTS=500 (payments for each run of step 4; 0 skips it),
//! BENCH_PER_ENDPOINT=8, the API's WEBHOOK_MAX_IN_FLIGHT_PER_ENDPOINT).

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use base64::Engine;
use futures::StreamExt;
use hdrhistogram::Histogram;
use payments_api::webhooks::signature;
use paysys_testkit::{TestBroker, TestDb, free_port};
use serde_json::{Value, json};

mod common;
use common::{API_KEY, Api, DropDatabase, env_or};

/// Deliveries owed to the endpoints: rows made and events not yet fanned out (migration 0011).
const OWED: &str = "SELECT (SELECT count(*) FROM webhook_deliveries) + (
    SELECT count(*) FROM webhook_endpoints e
    JOIN events v ON v.principal = e.principal AND v.id > e.fanned_out_through
    WHERE v.type = ANY (e.event_types))";
/// The same plus the events not yet sequenced.
const OWED_OR_UNSEQUENCED: &str = "SELECT (SELECT count(*) FROM webhook_deliveries) + (
    SELECT count(*) FROM webhook_endpoints e
    JOIN events v ON v.principal = e.principal AND v.id > e.fanned_out_through
    WHERE v.type = ANY (e.event_types)) + (SELECT count(*) FROM events_unsequenced)";

/// The API with webhooks on, delivering over plain HTTP to loopback receivers.
fn start_api(db: &TestDb, broker: &TestBroker, port: u16) -> Api {
    let key = base64::engine::general_purpose::STANDARD.encode([9u8; 32]);
    common::start_api(
        db,
        broker,
        port,
        &[
            ("WEBHOOKS_ENABLED", "true".into()),
            ("WEBHOOK_SECRETS_KEY", key),
            ("WEBHOOK_ALLOW_HTTP", "true".into()),
            ("WEBHOOK_ALLOWED_CIDRS", "127.0.0.0/8".into()),
            ("WEBHOOK_POLL_INTERVAL_MS", "20".into()),
            (
                "WEBHOOK_MAX_IN_FLIGHT_PER_ENDPOINT",
                env_or("BENCH_PER_ENDPOINT", 8).to_string(),
            ),
        ],
    )
}

/// A receiver verifying signatures (secrets by path) and timing each first arrival.
#[derive(Default)]
struct Received {
    secrets: Mutex<std::collections::HashMap<String, String>>,
    seen: Mutex<HashSet<(String, i64)>>,
    lag_us: Mutex<Option<Histogram<u64>>>,
    first: Mutex<Option<Instant>>,
    last: Mutex<Option<Instant>>,
    bad: std::sync::atomic::AtomicU64,
}

impl Received {
    fn reset(&self) {
        self.seen.lock().unwrap().clear();
        *self.lag_us.lock().unwrap() = Some(Histogram::new(3).unwrap());
        *self.first.lock().unwrap() = None;
        *self.last.lock().unwrap() = None;
    }

    fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }
}

async fn receive(
    State(state): State<Arc<Received>>,
    axum::extract::Path(path): axum::extract::Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let now = chrono::Utc::now();
    let secret = state
        .secrets
        .lock()
        .unwrap()
        .get(&path)
        .cloned()
        .unwrap_or_default();
    let header = headers
        .get("paysys-signature")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if signature::verify(&secret, header, &body, now.timestamp(), 300).is_err() {
        state.bad.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        return StatusCode::BAD_REQUEST;
    }
    let event: Value = serde_json::from_slice(&body).unwrap();
    let id = event["id"].as_i64().unwrap();
    if state.seen.lock().unwrap().insert((path, id)) {
        let created: chrono::DateTime<chrono::Utc> =
            event["createdAt"].as_str().unwrap().parse().unwrap();
        let lag = (now - created).num_microseconds().unwrap_or(0).max(1) as u64;
        if let Some(h) = state.lag_us.lock().unwrap().as_mut() {
            let _ = h.record(lag);
        }
        let at = Instant::now();
        state.first.lock().unwrap().get_or_insert(at);
        *state.last.lock().unwrap() = Some(at);
    }
    StatusCode::NO_CONTENT
}

async fn start_receiver(state: Arc<Received>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new()
        .route("/hook/{path}", axum::routing::post(receive))
        .with_state(state);
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

async fn register(client: &reqwest::Client, base: &str, url: &str) -> String {
    let reply: Value = client
        .post(format!("{base}/v1/webhook-endpoints"))
        .header("authorization", API_KEY)
        .json(&json!({"url": url, "eventTypes": ["payment.created"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    reply["secret"].as_str().expect("registered").to_owned()
}

/// Creates `n` payments with `clients` concurrent requests; the created/s.
async fn create(client: &reqwest::Client, base: &str, n: usize, clients: usize) -> f64 {
    let body = json!({"amount": 12.34, "currency": "EUR",
        "userId": "6f1c0c8e-5b0e-4d8e-9f3a-2b7d1c9e4a10",
        "payeeId": "1b2c3d4e-5f60-4a1b-8c2d-3e4f5a6b7c8d",
        "paymentMethodId": "9a8b7c6d-5e4f-4a3b-9c2d-1e0f9a8b7c6d"});
    let started = Instant::now();
    let created = futures::stream::iter(0..n)
        .map(|_| {
            let request = client
                .post(format!("{base}/payments"))
                .header("authorization", API_KEY)
                .json(&body);
            async move { request.send().await.map(|r| r.status().as_u16()) }
        })
        .buffer_unordered(clients)
        .filter(|status| std::future::ready(matches!(status, Ok(201))))
        .count()
        .await;
    created as f64 / started.elapsed().as_secs_f64()
}

async fn wait_for(state: &Received, expected: usize, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if state.count() >= expected {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

fn report_lag(what: &str, state: &Received, expected: usize) {
    let histogram = state.lag_us.lock().unwrap().clone().unwrap();
    let ms = |q: f64| histogram.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "{what}: {} of {expected} events, lag p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        state.count(),
        ms(0.5),
        ms(0.99),
        histogram.max() as f64 / 1000.0
    );
}

/// The load average, to say what else the machine was doing.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|text| {
            text.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_else(|_| "unknown".into())
}

/// Deletes every endpoint of the benchmark's caller.
async fn delete_endpoints(client: &reqwest::Client, base: &str) {
    let endpoints: Vec<Value> = client
        .get(format!("{base}/v1/webhook-endpoints"))
        .header("authorization", API_KEY)
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap()["data"]
        .as_array()
        .unwrap()
        .clone();
    for endpoint in endpoints {
        client
            .delete(format!(
                "{base}/v1/webhook-endpoints/{}",
                endpoint["id"].as_str().unwrap()
            ))
            .header("authorization", API_KEY)
            .send()
            .await
            .unwrap();
    }
}

/// Registers `n` live endpoints (on the receiver) and `dead` ones (closed ports).
async fn register_many(
    client: &reqwest::Client,
    base: &str,
    state: &Received,
    receiver: SocketAddr,
    live: usize,
    dead: usize,
) {
    for i in 0..dead {
        let closed = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap()
        };
        register(client, base, &format!("http://{closed}/hook/dead{i}")).await;
    }
    for i in 0..live {
        let path = format!("live{i}");
        let secret = register(client, base, &format!("http://{receiver}/hook/{path}")).await;
        state.secrets.lock().unwrap().insert(path, secret);
    }
}

/// Step 4's run: `payments` payments to the 100 live endpoints registered, then their
/// deliveries' lag and rate.
async fn live_run(
    what: &str,
    client: &reqwest::Client,
    base: &str,
    state: &Received,
    payments: usize,
    clients: usize,
) {
    state.reset();
    create(client, base, payments, clients).await;
    let expected = payments * 100;
    let done = wait_for(state, expected, Duration::from_secs(600)).await;
    let what = format!("{what}{}", if done { "" } else { " INCOMPLETE" });
    report_lag(&what, state, expected);
    report_rate("  live deliveries", state, None);
}

fn report_rate(what: &str, state: &Received, from: Option<Instant>) {
    let first = from.unwrap_or_else(|| state.first.lock().unwrap().unwrap());
    let span = state.last.lock().unwrap().unwrap() - first;
    println!(
        "{what}: {} events in {:.2} s = {:.0} events/s",
        state.count(),
        span.as_secs_f64(),
        state.count() as f64 / span.as_secs_f64(),
    );
}

#[tokio::main]
async fn main() {
    let payments = env_or("BENCH_PAYMENTS", 5000) as usize;
    let clients = env_or("BENCH_CLIENTS", 32) as usize;
    let fan_payments = env_or("BENCH_DEAD_PAYMENTS", 500) as usize;
    let db = TestDb::create().await;
    let _drop_database = DropDatabase(db.name.clone());
    let broker = TestBroker::new();
    let port = free_port();
    let _api = start_api(&db, &broker, port);
    let pool = db.pool().await;
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    for _ in 0..400 {
        if client.get(format!("{base}/healthz")).send().await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    println!("load average at the start: {}", load_average());
    let state = Arc::new(Received::default());
    state.reset();
    let receiver = start_receiver(state.clone()).await;

    // 1. No endpoint: the triggers only.
    let baseline = create(&client, &base, payments, clients).await;
    println!("created/s without endpoints: {baseline:.0} ({payments} payments, {clients} clients)");

    // 2. One endpoint, once step 1's events all have their ids (an event sequenced after the
    // registration goes to the endpoint, possibly before its secret is known here).
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let unsequenced: i64 = sqlx::query_scalar("SELECT count(*) FROM events_unsequenced")
            .fetch_one(&pool)
            .await
            .unwrap();
        if unsequenced == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let url = format!("http://{receiver}/hook/one");
    let secret = register(&client, &base, &url).await;
    state.secrets.lock().unwrap().insert("one".into(), secret);
    let with_webhooks = create(&client, &base, payments, clients).await;
    let delivered = wait_for(&state, payments, Duration::from_secs(300)).await;
    println!(
        "created/s with one endpoint: {with_webhooks:.0} ({:+.1} % vs without)",
        (with_webhooks / baseline - 1.0) * 100.0
    );
    report_rate(
        &format!(
            "dispatch while creating{}",
            if delivered { "" } else { " (INCOMPLETE)" }
        ),
        &state,
        None,
    );
    report_lag("one endpoint", &state, payments);

    // 3. From a backlog: the endpoint paused while the payments are made and sequenced (once
    // the last run's deliveries are all written: a success clears a pause). Paused, it gets
    // no delivery rows: its events wait above its cursor, fanned out once it is resumed.
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let waiting: i64 = sqlx::query_scalar(OWED_OR_UNSEQUENCED)
            .fetch_one(&pool)
            .await
            .unwrap();
        if waiting == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    state.reset();
    sqlx::query("UPDATE webhook_endpoints SET paused_until = 'infinity'")
        .execute(&pool)
        .await
        .unwrap();
    create(&client, &base, payments, clients).await;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let waiting: i64 = sqlx::query_scalar(OWED).fetch_one(&pool).await.unwrap();
        if waiting as usize >= payments || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let resumed = Instant::now();
    sqlx::query("UPDATE webhook_endpoints SET paused_until = NULL")
        .execute(&pool)
        .await
        .unwrap();
    let drained = wait_for(&state, payments, Duration::from_secs(300)).await;
    report_rate(
        &format!(
            "dispatch from a backlog of {payments}{}",
            if drained { "" } else { " (INCOMPLETE)" }
        ),
        &state,
        Some(resumed),
    );

    // 4. 100 live endpoints, alone then beside 900 dead ones: the live ones' lag.
    if fan_payments == 0 {
        return;
    }
    for dead in [0, 900] {
        delete_endpoints(&client, &base).await;
        register_many(&client, &base, &state, receiver, 100, dead).await;
        let what = format!("100 live of {} endpoints ({dead} dead)", 100 + dead);
        live_run(&what, &client, &base, &state, fan_payments, clients).await;
    }
    // Once more beside the same 900 dead endpoints, now known to fail (each tried once; their
    // next retry is seconds away): what they cost after their first attempt.
    let failing: i64 =
        sqlx::query_scalar("SELECT count(*) FROM webhook_endpoints WHERE consecutive_failures > 0")
            .fetch_one(&pool)
            .await
            .unwrap();
    let what = format!("100 live beside {failing} endpoints known to fail");
    live_run(&what, &client, &base, &state, fan_payments, clients).await;
    println!(
        "bad signatures seen: {}; load average at the end: {}",
        state.bad.load(std::sync::atomic::Ordering::Relaxed),
        load_average()
    );
}
