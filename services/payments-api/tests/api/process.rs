//! The real `payments-api` binary: configuration errors, start-up order, SIGTERM.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use paysys_testkit::{FaultProxy, TestBroker, TestDb};

use crate::harness::*;
use paysys_testkit::free_port;

const BINARY: &str = env!("CARGO_BIN_EXE_payments-api");

fn base_command(db: &TestDb, broker: &TestBroker, port: u16) -> Command {
    let mut command = Command::new(BINARY);
    command
        .env_clear()
        .env("PORT", port.to_string())
        .env("DATABASE_URL", &db.url)
        .env("AMQP_URL", &broker.url)
        .env("AMQP_PREFIX", &broker.prefix)
        .env("API_KEYS", format!("alice={ALICE}"))
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_configuration_fails_naming_the_variable() {
    let db = TestDb {
        name: String::new(),
        url: "postgres://127.0.0.1:1/none".into(),
    };
    let broker = TestBroker::new();
    for (name, value) in [
        ("PORT", "eighty"),
        ("MAX_AMOUNT", "-1"),
        ("API_KEYS", "alice=tiny-secret"),
        ("JWT_ALGORITHM", "none"),
    ] {
        let output = base_command(&db, &broker, 5000)
            .env(name, value)
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(2), "{name}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(name), "{name}: {stderr}");
        assert!(
            !stderr.contains("tiny-secret"),
            "the key must not be echoed: {stderr}"
        );
    }
    let output = base_command(&db, &broker, 5000)
        .env_remove("DATABASE_URL")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&output.stderr).contains("DATABASE_URL"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waits_for_a_database_that_starts_later_and_stops_cleanly_on_sigterm() {
    let db = TestDb::create().await;
    let broker = TestBroker::new();
    let (proxy, url) = FaultProxy::in_front_of(&db.url).await;
    proxy.cut().await;
    let port = free_port();
    let db_via_proxy = TestDb {
        name: db.name.clone(),
        url,
    };
    let mut child = tokio::process::Command::from(base_command(&db_via_proxy, &broker, port))
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        child.try_wait().unwrap().is_none(),
        "an absent database is waited for, not fatal"
    );
    proxy.restore();

    let client = reqwest_like::Client::new(port);
    let ready = paysys_testkit::eventually(Duration::from_secs(20), || async {
        (client.status("/readyz").await == Some(200)).then_some(())
    })
    .await;
    assert!(ready.is_some(), "ready once the database is reachable");

    // Requests in flight when SIGTERM arrives are finished, not cut.
    let requests: Vec<_> = (0..40)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { client.create().await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let pid = child.id().unwrap();
    Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    let started = Instant::now();
    let status = tokio::time::timeout(Duration::from_secs(15), child.wait())
        .await
        .expect("exits after SIGTERM")
        .unwrap();
    assert!(status.success(), "graceful exit: {status:?}");
    assert!(started.elapsed() < Duration::from_secs(15));

    let mut accepted = Vec::new();
    for request in requests {
        match request.await.unwrap() {
            Some((201, id)) => accepted.push(id),
            Some((status, _)) => panic!("a request got {status} during shutdown"),
            None => {} // refused before being accepted: the client may retry elsewhere
        }
    }
    let pool = db.pool().await;
    for id in &accepted {
        let found: i64 = sqlx::query_scalar("SELECT count(*) FROM payments WHERE id = $1::uuid")
            .bind(id)
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(found, 1, "every 201 is durable");
    }
    let _ = StatusCode::OK;
}

/// A minimal HTTP client over hyper for the process tests.
mod reqwest_like {
    use http_body_util::{BodyExt, Full};
    use hyper::body::Bytes;
    use hyper_util::client::legacy::Client as Hyper;
    use hyper_util::client::legacy::connect::HttpConnector;
    use hyper_util::rt::TokioExecutor;

    use crate::harness::{ALICE, demo_payment};

    #[derive(Clone)]
    pub struct Client {
        base: String,
        inner: Hyper<HttpConnector, Full<Bytes>>,
    }

    impl Client {
        pub fn new(port: u16) -> Self {
            Self {
                base: format!("http://127.0.0.1:{port}"),
                inner: Hyper::builder(TokioExecutor::new()).build_http(),
            }
        }

        pub async fn status(&self, path: &str) -> Option<u16> {
            let request = hyper::Request::get(format!("{}{path}", self.base))
                .body(Full::default())
                .unwrap();
            self.inner
                .request(request)
                .await
                .ok()
                .map(|r| r.status().as_u16())
        }

        /// POSTs the demo payment: the status and PaymentId, or None if not answered.
        pub async fn create(&self) -> Option<(u16, String)> {
            let request = hyper::Request::post(format!("{}/payments", self.base))
                .header("content-type", "application/json")
                .header("authorization", ALICE)
                .body(Full::new(Bytes::from(demo_payment().to_string())))
                .unwrap();
            let response = self.inner.request(request).await.ok()?;
            let status = response.status().as_u16();
            let body = response.into_body().collect().await.ok()?.to_bytes();
            let json: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            Some((
                status,
                json["PaymentId"].as_str().unwrap_or_default().to_owned(),
            ))
        }
    }
}
