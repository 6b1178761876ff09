//! Sends a steady stream of payments (open loop: at a fixed rate, whatever the answers) and
//! records what every request got.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::sync::Mutex;
use uuid::Uuid;

use crate::system::API_KEY;

pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// A request unanswered after this long counts as a hang.
pub const HANG: Duration = Duration::from_secs(10);

pub fn http_client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

pub async fn get_status(client: &HttpClient, url: &str) -> Option<u16> {
    let request = hyper::Request::get(url).body(Full::default()).ok()?;
    let response = tokio::time::timeout(Duration::from_secs(2), client.request(request))
        .await
        .ok()?
        .ok()?;
    Some(response.status().as_u16())
}

/// One API request with the system's key: its status and its JSON body (`Null` when the body
/// is not JSON). For tests that check single answers, not for load.
pub async fn call(
    method: &str,
    url: &str,
    body: Option<serde_json::Value>,
) -> (u16, serde_json::Value) {
    let mut request = hyper::Request::builder()
        .method(method)
        .uri(url)
        .header("authorization", API_KEY);
    if body.is_some() {
        request = request.header("content-type", "application/json");
    }
    let request = request
        .body(Full::new(Bytes::from(
            body.map(|b| b.to_string()).unwrap_or_default(),
        )))
        .expect("a valid request");
    let response = http_client()
        .request(request)
        .await
        .unwrap_or_else(|error| panic!("{method} {url}: {error}"));
    let status = response.status().as_u16();
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("the whole body")
        .to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
    )
}

/// What the clients saw.
#[derive(Debug, Clone)]
pub struct DriverStats {
    /// Time to each answer, in microseconds.
    pub latency: hdrhistogram::Histogram<u64>,
    pub sent: u64,
    /// Payment ids answered with 201.
    pub accepted: Vec<Uuid>,
    /// Answers by status code.
    pub statuses: BTreeMap<u16, u64>,
    /// Connection refused or reset before an answer (e.g. the replica was killed).
    pub unanswered: u64,
    /// 5xx answers other than 503 with Retry-After.
    pub bad_5xx: u64,
    pub hangs: u64,
}

impl Default for DriverStats {
    fn default() -> Self {
        Self {
            latency: hdrhistogram::Histogram::new_with_bounds(1, 600_000_000, 3)
                .expect("histogram bounds"),
            sent: 0,
            accepted: Vec::new(),
            statuses: BTreeMap::new(),
            unanswered: 0,
            bad_5xx: 0,
            hangs: 0,
        }
    }
}

pub struct Driver {
    client: HttpClient,
    urls: Vec<String>,
}

impl Driver {
    pub fn new(urls: Vec<String>) -> Self {
        Self {
            client: http_client(),
            urls,
        }
    }

    /// Sends `rate` payments per second for `duration`, round-robin over the API replicas.
    pub async fn run(&self, rate: u32, duration: Duration) -> DriverStats {
        self.run_after_warmup(rate, Duration::ZERO, duration).await
    }

    /// Sends `rate` payments per second for `warmup` then `duration`, without a pause, and
    /// records only the requests sent after the warm-up (connections, pools and plans are
    /// made during it, as in any benchmark's warm-up).
    pub async fn run_after_warmup(
        &self,
        rate: u32,
        warmup: Duration,
        duration: Duration,
    ) -> DriverStats {
        let stats = Arc::new(Mutex::new(DriverStats::default()));
        let measured_from = Instant::now() + warmup;
        let duration = warmup + duration;
        let interval = Duration::from_secs_f64(1.0 / f64::from(rate.max(1)));
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let started = Instant::now();
        let mut tasks = Vec::new();
        let mut n = 0usize;
        while started.elapsed() < duration {
            ticker.tick().await;
            let url = format!("{}/payments", self.urls[n % self.urls.len()]);
            n += 1;
            let (client, stats) = (self.client.clone(), stats.clone());
            tasks.push(tokio::spawn(async move {
                let sent_at = Instant::now();
                let outcome = send(&client, &url).await;
                if sent_at < measured_from {
                    return;
                }
                let took = sent_at.elapsed().as_micros() as u64;
                let mut stats = stats.lock().await;
                stats.sent += 1;
                if matches!(outcome, Sent::Answered { .. }) {
                    let _ = stats.latency.record(took.max(1));
                }
                match outcome {
                    Sent::Answered {
                        status,
                        retry_after,
                        id,
                    } => {
                        *stats.statuses.entry(status).or_default() += 1;
                        if status == 201 {
                            stats.accepted.extend(id);
                        }
                        if status >= 500 && !(status == 503 && retry_after) {
                            stats.bad_5xx += 1;
                        }
                    }
                    Sent::Unanswered => stats.unanswered += 1,
                    Sent::Hung => stats.hangs += 1,
                }
            }));
        }
        for task in tasks {
            let _ = task.await;
        }
        Arc::try_unwrap(stats).expect("all tasks done").into_inner()
    }
}

enum Sent {
    Answered {
        status: u16,
        retry_after: bool,
        id: Option<Uuid>,
    },
    Unanswered,
    Hung,
}

fn body() -> Bytes {
    Bytes::from(
        serde_json::json!({
            "amount": 70.5, "currency": "USD", "userId": Uuid::new_v4(),
            "payeeId": Uuid::new_v4(), "paymentMethodId": Uuid::new_v4()
        })
        .to_string(),
    )
}

async fn send(client: &HttpClient, url: &str) -> Sent {
    let request = hyper::Request::post(url)
        .header("content-type", "application/json")
        .header("authorization", API_KEY)
        .body(Full::new(body()))
        .expect("request");
    let response = match tokio::time::timeout(HANG, client.request(request)).await {
        Err(_) => return Sent::Hung,
        Ok(Err(_)) => return Sent::Unanswered,
        Ok(Ok(response)) => response,
    };
    let status = response.status().as_u16();
    let retry_after = response.headers().contains_key("retry-after");
    let Ok(Ok(collected)) = tokio::time::timeout(HANG, response.into_body().collect()).await else {
        return Sent::Unanswered;
    };
    let json: serde_json::Value = serde_json::from_slice(&collected.to_bytes()).unwrap_or_default();
    let id = json["PaymentId"]
        .as_str()
        .and_then(|id| Uuid::parse_str(id).ok());
    Sent::Answered {
        status,
        retry_after,
        id,
    }
}
