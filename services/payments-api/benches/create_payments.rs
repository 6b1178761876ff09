//! Load benchmark of `POST /payments` (not a test: it prints numbers).
//!
//! Starts the release `payments-api` binary as its own process against the real PostgreSQL and
//! RabbitMQ (a private database and queue prefix), drives it with concurrent keep-alive
//! clients for a fixed time, and prints throughput, latency percentiles, how long the outbox
//! took to drain after the load stopped, and whether every 201 is durable.
//!
//! `cargo bench -p payments-api --bench create_payments` (env: BENCH_CLIENTS=64,
//! BENCH_SECONDS=10, BENCH_WARMUP_SECONDS=2).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use paysys_testkit::free_port;
use paysys_testkit::{TestBroker, TestDb};

mod common;
use common::{API_KEY, DropDatabase, env_or, start_api};

struct Totals {
    histogram: Histogram<u64>,
    created: u64,
    other: u64,
}

#[tokio::main]
async fn main() {
    let clients = env_or("BENCH_CLIENTS", 64) as usize;
    let seconds = env_or("BENCH_SECONDS", 10);
    let warmup = env_or("BENCH_WARMUP_SECONDS", 2);

    let db = TestDb::create().await;
    let _drop_database = DropDatabase(db.name.clone());
    let broker = TestBroker::new();
    let port = free_port();
    let _api = start_api(&db, &broker, port, &[]);
    let base = format!("http://127.0.0.1:{port}");
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    wait_ready(&client, &base).await;

    // Payers drawn from a fixed population, as real traffic is spread over many users.
    let users = env_or("BENCH_USERS", 10_000);
    let bodies: Arc<Vec<Bytes>> = Arc::new(
        (0..users.min(100_000))
            .map(|_| {
                Bytes::from(
                    serde_json::json!({
                        "amount": 70.5, "currency": "USD",
                        "userId": uuid::Uuid::new_v4(),
                        "payeeId": "1b2c3d4e-5f60-4a1b-8c2d-3e4f5a6b7c8d",
                        "paymentMethodId": "9a8b7c6d-5e4f-4a3b-9c2d-1e0f9a8b7c6d"
                    })
                    .to_string(),
                )
            })
            .collect(),
    );

    println!(
        "payments-api create benchmark: {clients} clients, {users} payers, {warmup}s warm-up, {seconds}s measured"
    );
    let _ = drive(
        &client,
        &base,
        &bodies,
        clients,
        Duration::from_secs(warmup),
    )
    .await;
    let pool = db.pool().await;
    let before: i64 = sqlx::query_scalar("SELECT count(*) FROM payments")
        .fetch_one(&pool)
        .await
        .unwrap();
    let started = Instant::now();
    let totals = drive(
        &client,
        &base,
        &bodies,
        clients,
        Duration::from_secs(seconds),
    )
    .await;
    let elapsed = started.elapsed();
    let load_ended = Instant::now();

    let drained = loop {
        let backlog: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox")
            .fetch_one(&pool)
            .await
            .unwrap();
        if backlog == 0 {
            break load_ended.elapsed();
        }
        if load_ended.elapsed() > Duration::from_secs(120) {
            panic!("outbox not drained after 120 s ({backlog} left)");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let after: i64 = sqlx::query_scalar("SELECT count(*) FROM payments")
        .fetch_one(&pool)
        .await
        .unwrap();

    let h = &totals.histogram;
    let ms = |us: u64| us as f64 / 1000.0;
    println!("created            {:>10}", totals.created);
    println!("non-201 answers    {:>10}", totals.other);
    println!(
        "throughput         {:>10.0} payments/s",
        totals.created as f64 / elapsed.as_secs_f64()
    );
    println!(
        "latency p50        {:>10.2} ms",
        ms(h.value_at_quantile(0.50))
    );
    println!(
        "latency p90        {:>10.2} ms",
        ms(h.value_at_quantile(0.90))
    );
    println!(
        "latency p99        {:>10.2} ms",
        ms(h.value_at_quantile(0.99))
    );
    println!("latency max        {:>10.2} ms", ms(h.max()));
    println!(
        "outbox drained in  {:>10.0} ms after the load stopped",
        drained.as_secs_f64() * 1000.0
    );
    println!(
        "durable            {:>10} (rows added {} vs 201s {})",
        if (after - before) as u64 == totals.created {
            "yes"
        } else {
            "NO"
        },
        after - before,
        totals.created
    );

    broker.delete().await;
}

async fn wait_ready(
    client: &Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
    base: &str,
) {
    for _ in 0..300 {
        let request = hyper::Request::get(format!("{base}/readyz"))
            .body(Full::default())
            .unwrap();
        if let Ok(response) = client.request(request).await
            && response.status() == 200
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("payments-api did not become ready");
}

async fn drive(
    client: &Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
    base: &str,
    bodies: &Arc<Vec<Bytes>>,
    clients: usize,
    duration: Duration,
) -> Totals {
    let stop = Arc::new(AtomicBool::new(false));
    let other = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for task_index in 0..clients {
        let (client, url, bodies, stop, other) = (
            client.clone(),
            format!("{base}/payments"),
            bodies.clone(),
            stop.clone(),
            other.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
            let mut created = 0;
            let mut next = task_index;
            while !stop.load(Ordering::Relaxed) {
                next = (next + clients) % bodies.len();
                let body = &bodies[next];
                let request = hyper::Request::post(&url)
                    .header("content-type", "application/json")
                    .header("authorization", API_KEY)
                    .body(Full::new(body.clone()))
                    .unwrap();
                let sent = Instant::now();
                match client.request(request).await {
                    Ok(response) => {
                        let status = response.status();
                        let _ = response.into_body().collect().await;
                        histogram.record(sent.elapsed().as_micros() as u64).unwrap();
                        if status == 201 {
                            created += 1;
                        } else {
                            other.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Err(_) => {
                        other.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            (histogram, created)
        }));
    }
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Relaxed);
    let mut totals = Totals {
        histogram: Histogram::new_with_bounds(1, 60_000_000, 3).unwrap(),
        created: 0,
        other: 0,
    };
    for task in tasks {
        let (histogram, created) = task.await.unwrap();
        totals.histogram.add(histogram).unwrap();
        totals.created += created;
    }
    totals.other = other.load(Ordering::Relaxed);
    totals
}
