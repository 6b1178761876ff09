//! `payments-api smoke-test` (what the chart's `helm test` pod runs) against the real
//! services: it creates a payment, waits for the decision and exits 0; with no risk engine
//! consuming, it gives up at its deadline with exit 1 naming the pending payment; with a
//! wrong key, it stops at once with the API's 401. The key never appears in its output.

use std::process::Output;
use std::time::{Duration, Instant};

use paysys_system_tests::System;
use paysys_system_tests::driver::call;
use paysys_system_tests::process::binary;
use paysys_system_tests::system::API_KEY;

async fn smoke_test(url: &str, api_key: &str, timeout_seconds: u64) -> (Output, Duration) {
    let started = Instant::now();
    let output = tokio::process::Command::new(binary("payments-api"))
        .arg("smoke-test")
        .env_clear()
        .env("SMOKE_API_URL", url)
        .env("API_KEY", api_key)
        .env("SMOKE_TIMEOUT_SECONDS", timeout_seconds.to_string())
        .output()
        .await
        .expect("run payments-api smoke-test");
    (output, started.elapsed())
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_smoke_test_passes_on_a_working_system_and_fails_clearly_otherwise() {
    let _serial = paysys_system_tests::SERIAL.lock().await;
    let mut system = System::start(1, 1).await;
    let base = system.api_urls()[0].clone();

    let (output, elapsed) = smoke_test(&base, API_KEY, 60).await;
    let said = text(&output);
    assert!(output.status.success(), "{said}");
    assert!(
        said.contains("created and approved") || said.contains("created and declined"),
        "{said}"
    );
    assert!(!said.contains(API_KEY), "the key is never printed");
    // The payment it named exists, decided.
    let id = said.split_whitespace().nth(1).unwrap().to_owned();
    let (status, payment) = call("GET", &format!("{base}/payments/{id}"), None).await;
    assert_eq!(status, 200, "{payment}");
    assert!(
        said.contains(&format!(
            "created and {}",
            payment["status"].as_str().unwrap()
        )),
        "{said} vs {payment}"
    );
    println!("smoke test: {} in {elapsed:?}", said.trim());

    // A wrong key: the API's 401, at once.
    let (output, elapsed) = smoke_test(&base, "not-the-key-0123456789", 60).await;
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    assert!(text(&output).contains("answered 401"), "{}", text(&output));
    assert!(elapsed < Duration::from_secs(10), "{elapsed:?}");

    // Nobody deciding: created, then still pending at the deadline.
    system.risks[0].kill().await;
    let (output, elapsed) = smoke_test(&base, API_KEY, 3).await;
    let said = text(&output);
    assert_eq!(output.status.code(), Some(1), "{said}");
    assert!(said.contains("still pending after 3 s"), "{said}");
    assert!(elapsed < Duration::from_secs(15), "{elapsed:?}");

    // Bad configuration: exit 2 naming the variable.
    let output = tokio::process::Command::new(binary("payments-api"))
        .arg("smoke-test")
        .env_clear()
        .env("API_KEY", API_KEY)
        .output()
        .await
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(text(&output).contains("SMOKE_API_URL"), "{}", text(&output));
}
