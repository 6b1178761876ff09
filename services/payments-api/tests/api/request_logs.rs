//! Every log line of a request carries its request id: the real binary with JSON logs, requests
//! with a known `X-Request-Id`, among them ones that log a warning (a 401, the database
//! refused on both the group-commit and the idempotent path), and every line they logged is
//! checked for the id.

use std::process::{Command, Stdio};
use std::time::Duration;

use paysys_testkit::{FaultProxy, TestBroker, TestDb, free_port};
use serde_json::Value;

use crate::harness::*;

/// The request id of a line: the field of the request's span (`http::router`), if the line
/// was logged inside one.
fn request_id(line: &Value) -> Option<&str> {
    line["spans"]
        .as_array()?
        .iter()
        .find(|span| span["name"] == "request")?["request_id"]
        .as_str()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_line_logged_for_a_request_has_its_request_id() {
    let db = TestDb::create().await;
    let broker = TestBroker::new();
    let (proxy, database_url) = FaultProxy::in_front_of(&db.url).await;
    let port = free_port();
    let child = tokio::process::Command::from({
        let mut command = Command::new(env!("CARGO_BIN_EXE_payments-api"));
        command
            .env_clear()
            .env("PORT", port.to_string())
            .env("DATABASE_URL", &database_url)
            .env("AMQP_URL", &broker.url)
            .env("AMQP_PREFIX", &broker.prefix)
            .env("API_KEYS", format!("alice={ALICE}"))
            .env("LOG_FORMAT", "json")
            // tower_http's line at the end of every request, so that each request logs at
            // least one line.
            .env("RUST_LOG", "info,tower_http=debug")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        command
    })
    .kill_on_drop(true)
    .spawn()
    .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let ready = paysys_testkit::eventually(Duration::from_secs(30), || async {
        let reply = client.get(format!("{base}/readyz")).send().await.ok()?;
        (reply.status() == 200).then_some(())
    })
    .await;
    assert!(ready.is_some(), "the API did not become ready");

    let send = |id: &'static str, path: &str, auth: Option<&str>, key: Option<&str>| {
        let mut request = client
            .post(format!("{base}{path}"))
            .header("x-request-id", id)
            .json(&demo_payment());
        if let Some(auth) = auth {
            request = request.header("authorization", auth);
        }
        if let Some(key) = key {
            request = request.header("idempotency-key", key);
        }
        async move {
            let reply = request.send().await.unwrap();
            assert_eq!(
                reply.headers()["x-request-id"],
                id,
                "the answer names the request"
            );
            let status = reply.status().as_u16();
            (status, reply.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    assert_eq!(
        send("req-created", "/v1/payments", Some(ALICE), None)
            .await
            .0,
        201
    );
    let (status, problem) = send(
        "req-unauthorized",
        "/v1/payments",
        Some("wrong-key-0123456789"),
        None,
    )
    .await;
    assert_eq!(status, 401, "{problem}");
    assert_eq!(problem["requestId"], "req-unauthorized");
    // The database refused: through group commit (whose writer task serves many requests at
    // once) and through the idempotent path (in the handler's own transaction).
    proxy.cut().await;
    let (status, problem) = send("req-db-grouped", "/payments", Some(ALICE), None).await;
    assert_eq!(status, 503, "{problem}");
    assert_eq!(problem["requestId"], "req-db-grouped");
    let (status, problem) = send("req-db-keyed", "/v1/payments", Some(ALICE), Some("key-1")).await;
    assert_eq!(status, 503, "{problem}");
    proxy.restore();

    let pid = child.id().unwrap();
    Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    let output = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .expect("the API stopped after SIGTERM")
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let lines: Vec<Value> = stdout
        .lines()
        .map(|line| {
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"))
        })
        .collect();
    let of = |id: &str| -> Vec<&Value> {
        lines
            .iter()
            .filter(|line| request_id(line) == Some(id))
            .collect()
    };
    let says = |lines: &[&Value], level: &str, message: &str| {
        lines
            .iter()
            .any(|line| line["level"] == level && line["message"] == message)
    };
    for id in [
        "req-created",
        "req-unauthorized",
        "req-db-grouped",
        "req-db-keyed",
    ] {
        assert!(!of(id).is_empty(), "no line names {id}:\n{stdout}");
    }
    assert!(
        says(&of("req-unauthorized"), "INFO", "authentication failed"),
        "{stdout}"
    );
    assert!(
        says(&of("req-db-grouped"), "WARN", "database unavailable"),
        "{stdout}"
    );
    assert!(
        says(&of("req-db-keyed"), "WARN", "database unavailable"),
        "{stdout}"
    );
    // What a request logs is never logged outside of it: each of these lines has an id, and
    // every line inside a request's span has one.
    for line in &lines {
        let message = line["message"].as_str().unwrap_or_default();
        if [
            "authentication failed",
            "database unavailable",
            "database error",
        ]
        .contains(&message)
            || line["spans"]
                .as_array()
                .is_some_and(|spans| spans.iter().any(|span| span["name"] == "request"))
        {
            assert!(
                request_id(line).is_some_and(|id| !id.is_empty()),
                "a request's line without its request id: {line}"
            );
        }
    }
}
