//! The `risk-engine` binary: configuration errors, the demo's log lines (text and JSON), the
//! HTTP probes and metrics, and a graceful stop on SIGTERM.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};

use crate::harness::{Engine, WAIT, payment};
use paysys_testkit::free_port;

/// A plain HTTP/1.1 GET; returns (status, body).
pub(crate) async fn get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await.ok()?;
    let status = response.split(' ').nth(1)?.parse().ok()?;
    let body = response.split_once("\r\n\r\n")?.1.to_owned();
    Some((status, body))
}

pub(crate) fn spawn(engine: &Engine, port: u16, extra: &[(&str, &str)]) -> Child {
    let mut command = Command::new(env!("CARGO_BIN_EXE_risk-engine"));
    command
        .env_clear()
        .env("AMQP_URL", &engine.broker.url)
        .env("AMQP_PREFIX", &engine.broker.prefix)
        .env("PORT", port.to_string())
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (name, value) in extra {
        command.env(name, value);
    }
    command.spawn().expect("start risk-engine")
}

pub(crate) async fn sigterm(child: &Child) {
    let pid = child.id().expect("running").to_string();
    let status = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .unwrap();
    assert!(status.success());
}

/// Runs the binary, decides the demo's hand-published message, stops it with SIGTERM and
/// returns its stdout lines.
async fn decide_one_and_stop(extra: &[(&str, &str)]) -> (String, Vec<String>) {
    let engine = Engine::prepare().await;
    let port = free_port();
    let mut child = spawn(&engine, port, extra);
    let ready = paysys_testkit::eventually(WAIT, || async move {
        get(port, "/readyz")
            .await
            .filter(|(status, _)| *status == 200)
    })
    .await;
    assert!(ready.is_some(), "the engine becomes ready");
    assert_eq!(get(port, "/healthz").await.unwrap().0, 200);

    let p = payment();
    engine.publish(&p).await;
    let decision = engine.next_decision(WAIT).await.expect("a decision");
    assert_eq!(decision.payment_id, p.payment_id);
    // The decision is on the queue once confirmed; the engine counts it after its ack.
    let counted = format!(
        "paysys_risk_decisions_total{{outcome=\"{}\"}} 1",
        decision.outcome.as_str()
    );
    let metrics = paysys_testkit::eventually(WAIT, || {
        let counted = counted.clone();
        async move {
            get(port, "/metrics")
                .await
                .filter(|(status, body)| *status == 200 && body.contains(&counted))
        }
    })
    .await
    .map(|(_, body)| body)
    .expect("the decision is counted in /metrics");
    assert!(metrics.contains("paysys_risk_decision_duration_seconds_count 1"));
    assert!(metrics.contains("paysys_risk_dead_lettered_total{reason=\"malformed\"} 0"));

    sigterm(&child).await;
    let status = tokio::time::timeout(WAIT, child.wait())
        .await
        .expect("exits after SIGTERM")
        .unwrap();
    assert!(status.success(), "clean exit on SIGTERM: {status}");
    let mut lines = Vec::new();
    let mut reader = BufReader::new(child.stdout.take().unwrap()).lines();
    while let Ok(Some(line)) = reader.next_line().await {
        lines.push(line);
    }
    engine.finish().await;
    (p.payment_id.to_string(), lines)
}

#[tokio::test]
async fn logs_the_demo_lines_and_stops_on_sigterm() {
    let (id, lines) = decide_one_and_stop(&[]).await;
    let received = lines
        .iter()
        .position(|l| l.contains("Received message: {") && l.contains(&id))
        .unwrap_or_else(|| panic!("no Received line in {lines:#?}"));
    let decided = lines
        .iter()
        .position(|l| {
            l.contains(&format!(
                "Payment {id} approved. Score 0 below threshold 100."
            ))
        })
        .unwrap_or_else(|| panic!("no decision line in {lines:#?}"));
    assert!(received < decided);
}

#[tokio::test]
async fn json_logs_carry_structured_fields() {
    let (id, lines) = decide_one_and_stop(&[
        ("LOG_FORMAT", "json"),
        ("RISK_MODE", "random"),
        ("RISK_APPROVAL_PROBABILITY", "0"),
    ])
    .await;
    let entries: Vec<serde_json::Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let decision = entries
        .iter()
        .find(|e| {
            e["message"]
                .as_str()
                .is_some_and(|m| m.starts_with(&format!("Payment {id} declined. Random draw ")))
        })
        .unwrap_or_else(|| panic!("no decision entry in {entries:#?}"));
    assert_eq!(decision["payment_id"], id.as_str());
    assert_eq!(decision["outcome"], "declined");
    assert_eq!(decision["score"], 100);
    assert_eq!(decision["rules_version"], "random:p=0:seed=0");
}

#[tokio::test]
async fn configuration_errors_name_the_variable() {
    let engine = Engine::prepare().await;
    let rules = std::env::temp_dir().join(format!("risk-rules-{}.yaml", uuid::Uuid::new_v4()));
    std::fs::write(&rules, "velocity:\n  maxCnt: 3\n").unwrap();
    let rules_path = rules.to_str().unwrap().to_owned();
    let cases: Vec<(Vec<(&str, &str)>, String)> = vec![
        (vec![("RISK_MODE", "coin")], "RISK_MODE".into()),
        (
            vec![("RISK_APPROVAL_PROBABILITY", "2")],
            "RISK_APPROVAL_PROBABILITY".into(),
        ),
        (
            vec![("RISK_RULES_FILE", rules_path.as_str())],
            format!("RISK_RULES_FILE: {rules_path}: velocity.maxCnt: unknown field `maxCnt`"),
        ),
    ];
    for (extra, expected) in cases {
        let child = spawn(&engine, free_port(), &extra);
        let output = tokio::time::timeout(WAIT, child.wait_with_output())
            .await
            .expect("exits at once")
            .unwrap();
        assert_eq!(output.status.code(), Some(2));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(&expected), "{stderr:?} lacks {expected:?}");
    }
    std::fs::remove_file(rules).unwrap();
    engine.finish().await;
}

#[tokio::test]
async fn not_ready_while_the_broker_is_unreachable() {
    let engine = Engine::prepare().await;
    let port = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_risk-engine"))
        .env_clear()
        // Nothing listens on port 1.
        .env("AMQP_URL", "amqp://guest:guest@127.0.0.1:1/%2f")
        .env("PORT", port.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let live =
        paysys_testkit::eventually(WAIT, || async move { get(port, "/healthz").await }).await;
    assert_eq!(live.map(|(s, _)| s), Some(200));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(get(port, "/readyz").await.unwrap().0, 503);
    sigterm(&child).await;
    let status = tokio::time::timeout(WAIT, child.wait())
        .await
        .expect("exits")
        .unwrap();
    assert!(status.success());
    engine.finish().await;
}
