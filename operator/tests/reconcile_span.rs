//! What a reconcile logs is inside a span naming the resource.
//!
//! Alone in its test binary on purpose: tracing caches whether a span is enabled once for
//! every thread of the process, and with other tests starting beside it the `reconcile` span
//! was now and then cached as disabled before this test's subscriber existed (a flake seen
//! under load, the line logged without its span).

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{api_server, system};
use kube::core::error_boundary::DeserializeGuard;
use paysys_operator::controller::{self, Context};
use paysys_operator::metrics::Metrics;
use serde_json::Value;

const STATUS: &str = "/apis/paysys.io/v1alpha1/namespaces/payments/paymentsystems/shop/status";

/// What a reconcile logs is inside a span naming the resource, without each line passing it.
#[tokio::test]
async fn a_reconcile_logs_inside_a_span_naming_its_resource() {
    let logs = Arc::new(std::sync::Mutex::new(Vec::<u8>::new()));
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_writer(move || Capture(writer.clone()))
        .finish();
    // The test runtime is single-threaded: the reconcile task runs under this subscriber.
    let _subscriber = tracing::subscriber::set_default(subscriber);
    let (client, mut server) = api_server::client();
    let ctx = Arc::new(Context::new(client, Arc::new(Metrics::default()), None));
    let guard = Arc::new(DeserializeGuard(Ok(system("paused: true"))));
    let task = tokio::spawn(controller::reconcile(guard, ctx));
    server.expect_apply_status(STATUS).await;
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("reconcile finished")
        .expect("reconcile did not panic")
        .expect("a paused resource reconciles");
    let text = String::from_utf8(logs.lock().unwrap().clone()).unwrap();
    let line = text
        .lines()
        .find(|line| line.contains("paused; nothing changed"))
        .unwrap_or_else(|| panic!("no paused line in {text}"));
    let line: Value = serde_json::from_str(line).unwrap();
    assert_eq!(line["span"]["name"], "reconcile", "{line}");
    let object = line["span"]["object"].as_str().unwrap_or_default();
    assert!(
        object.starts_with("PaymentSystem.") && object.ends_with("/shop.payments"),
        "{line}"
    );
}

struct Capture(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Capture {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
