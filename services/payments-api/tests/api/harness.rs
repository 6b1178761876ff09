//! Starts the API in-process on an ephemeral port with a private database and queue names,
//! and talks to it over real HTTP.

use std::collections::HashMap;
use std::time::Duration;

use axum::http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use payments_api::config::Config;
use paysys_testkit::{TestBroker, TestDb};
use serde_json::{Value, json};
use tokio::sync::oneshot;

pub const ALICE: &str = "alice-key-0123456789abcdef";
pub const BOB: &str = "bob-key-0123456789abcdef";
pub const JWT_SECRET: &str = "test-jwt-secret-0123456789abcdef!!";
pub const USER: &str = "6f1c0c8e-5b0e-4d8e-9f3a-2b7d1c9e4a10";
pub const PAYEE: &str = "1b2c3d4e-5f60-4a1b-8c2d-3e4f5a6b7c8d";
pub const METHOD: &str = "9a8b7c6d-5e4f-4a3b-9c2d-1e0f9a8b7c6d";

/// Longer than the API's own bound on stopping its workers.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(30);

pub struct TestApi {
    pub base: String,
    pub _db: TestDb,
    pub broker: TestBroker,
    pub pool: sqlx::PgPool,
    client: Client<HttpConnector, Full<Bytes>>,
    stop: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

/// The original demo's request body.
pub fn demo_payment() -> Value {
    json!({"amount": 70.5, "currency": "USD", "userId": USER, "payeeId": PAYEE, "paymentMethodId": METHOD})
}

impl TestApi {
    pub async fn start() -> TestApi {
        Self::start_with(&[]).await
    }

    /// Starts with the default test configuration plus `overrides`; a value of `""` unsets.
    pub async fn start_with(overrides: &[(&str, &str)]) -> TestApi {
        let db = TestDb::create().await;
        let broker = TestBroker::new();
        Self::start_on(db, broker, overrides).await
    }

    pub async fn start_on(db: TestDb, broker: TestBroker, overrides: &[(&str, &str)]) -> TestApi {
        let mut env: HashMap<String, String> = [
            ("DATABASE_URL", db.url.as_str()),
            ("AMQP_URL", broker.url.as_str()),
            ("AMQP_PREFIX", broker.prefix.as_str()),
            ("API_KEYS", &format!("alice={ALICE},bob={BOB}")),
            ("JWT_ALGORITHM", "HS256"),
            ("JWT_SECRET", JWT_SECRET),
            ("DB_MAX_CONNECTIONS", "4"),
            ("OUTBOX_POLL_INTERVAL_MS", "100"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        for (key, value) in overrides {
            env.insert(key.to_string(), value.to_string());
        }
        let config = Config::from_source(&env).expect("test configuration");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(payments_api::run(config, listener, async {
            let _ = stopped.await;
        }));
        let pool = db.pool().await;
        let api = TestApi {
            base,
            _db: db,
            broker,
            pool,
            client: Client::builder(TokioExecutor::new()).build_http(),
            stop: Some(stop),
            server: Some(server),
        };
        api.wait_until_serving().await;
        api
    }

    /// Migrations run before the listener serves; wait for the first answer.
    async fn wait_until_serving(&self) {
        for _ in 0..200 {
            if let Ok(reply) =
                tokio::time::timeout(Duration::from_secs(1), self.get("/healthz", None)).await
                && reply.status == StatusCode::OK
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("the API did not start");
    }

    /// Stops the server gracefully and waits for it: at most [`STOP_TIMEOUT`], so that a
    /// worker ignoring the stop fails the test instead of hanging the run.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            tokio::time::timeout(STOP_TIMEOUT, server)
                .await
                .unwrap_or_else(|_| panic!("the API did not stop within {STOP_TIMEOUT:?}"))
                .unwrap()
                .unwrap();
        }
    }

    pub async fn request(
        &self,
        method: Method,
        path: &str,
        auth: Option<&str>,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> Reply {
        let mut request = Request::builder()
            .method(method)
            .uri(format!("{}{}", self.base, path));
        if let Some(auth) = auth {
            request = request.header("authorization", auth);
        }
        let has_content_type = headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("content-type"));
        if body.is_some() && !has_content_type {
            request = request.header("content-type", "application/json");
        }
        for (key, value) in headers {
            request = request.header(*key, *value);
        }
        let request = request
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .unwrap();
        let response = tokio::time::timeout(Duration::from_secs(30), self.client.request(request))
            .await
            .expect("the API answered within 30 s")
            .expect("HTTP request");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()))
        };
        Reply {
            status,
            headers,
            body,
        }
    }

    pub async fn get(&self, path: &str, auth: Option<&str>) -> Reply {
        self.request(Method::GET, path, auth, &[], None).await
    }

    pub async fn post(&self, path: &str, auth: Option<&str>, body: &Value) -> Reply {
        self.request(
            Method::POST,
            path,
            auth,
            &[],
            Some(body.to_string().into_bytes()),
        )
        .await
    }

    /// The value of the series `series` (a metric's name with its labels as `/metrics` writes
    /// them, e.g. `paysys_db_pool_connections{state="idle"}`) in a scrape, if present.
    pub async fn metric(&self, series: &str) -> Option<f64> {
        let text = self.get("/metrics", None).await.body;
        text.as_str()?
            .lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))?
            .parse()
            .ok()
    }

    /// Creates the demo payment as alice and returns its id.
    pub async fn create(&self, body: &Value) -> String {
        let reply = self.post("/payments", Some(ALICE), body).await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
        reply.body["PaymentId"].as_str().unwrap().to_owned()
    }

    /// Publishes a decision to the decisions queue, as the risk engine would.
    pub async fn publish_decision(
        &self,
        channel: &lapin::Channel,
        payment_id: &str,
        outcome: &str,
    ) {
        let decision = json!({
            "schema_version": 1, "payment_id": payment_id, "outcome": outcome, "score": 0,
            "reasons": [], "rules_version": "test", "decided_at": "2026-01-01T00:00:00Z"
        });
        self.publish_raw(channel, decision.to_string().as_bytes())
            .await;
    }

    pub async fn publish_raw(&self, channel: &lapin::Channel, body: &[u8]) {
        let published = paysys_amqp::publish_confirmed(
            channel,
            &self.broker.topology.decisions_exchange,
            paysys_core::topology::DECISION_ROUTING_KEY,
            body,
            lapin::BasicProperties::default().with_delivery_mode(2),
        );
        tokio::time::timeout(Duration::from_secs(30), published)
            .await
            .expect("RabbitMQ confirmed the decision within 30 s (a resource alarm blocks it)")
            .expect("publish decision");
    }

    /// Waits until the payment has `status`, returning its representation.
    pub async fn wait_for_status(&self, id: &str, status: &str) -> Value {
        let path = format!("/payments/{id}");
        paysys_testkit::eventually(Duration::from_secs(10), || async {
            let reply = self.get(&path, Some(ALICE)).await;
            (reply.body["status"] == status).then_some(reply.body)
        })
        .await
        .unwrap_or_else(|| panic!("payment {id} never became {status}"))
    }
}

impl Drop for TestApi {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
