//! A first start on a broker that has never seen paysys is quiet: both services start on a
//! fresh RabbitMQ virtual host with the default names (`AMQP_PREFIX` unset), one payment is
//! created and decided, both stop, and neither log holds an `ERROR` or `WARN` line. (The
//! check for the pre-`.v2` queues used to print eight `NOT_FOUND` errors there.)
//!
//! The virtual host is made with `rabbitmqctl`, so this runs where the broker does (as the
//! tests' local broker does); it is deleted, with everything in it, when the test ends.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use paysys_system_tests::driver::{get_status, http_client};
use paysys_system_tests::process::{Service, binary};
use paysys_testkit::{TestDb, free_port, unique_name};

const API_KEY: &str = "clean-start-key-0123456789";

/// A RabbitMQ virtual host of the test's own, deleted on drop (even when the test panics).
struct FreshVhost {
    name: String,
}

impl FreshVhost {
    fn create() -> FreshVhost {
        let name = unique_name("paysys-test_clean-start");
        rabbitmqctl(&["add_vhost", &name]);
        let vhost = FreshVhost { name };
        rabbitmqctl(&[
            "set_permissions",
            "-p",
            &vhost.name,
            "guest",
            ".*",
            ".*",
            ".*",
        ]);
        vhost
    }

    /// The tests' broker URL (`AMQP_URL`, else the local one) with this virtual host.
    fn url(&self) -> String {
        let base = paysys_testkit::amqp_url();
        let server = base
            .rsplit_once('/')
            .map_or(base.as_str(), |(server, _)| server);
        format!("{server}/{}", self.name)
    }
}

impl Drop for FreshVhost {
    fn drop(&mut self) {
        let _ = Command::new("rabbitmqctl")
            .args(["delete_vhost", &self.name])
            .output();
    }
}

fn rabbitmqctl(args: &[&str]) {
    let output = Command::new("rabbitmqctl")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("rabbitmqctl {args:?} cannot run ({e}): this test needs the broker's own rabbitmqctl (Debian: rabbitmq-server)"));
    assert!(
        output.status.success(),
        "rabbitmqctl {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Lines of a service's log at level ERROR or WARN (text format: the level is its own word
/// once the colour codes, which the services write even to a file, are taken out).
fn error_and_warn_lines(log: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    text.lines()
        .map(without_colours)
        .filter(|line| {
            line.split(|c: char| !c.is_ascii_alphanumeric())
                .any(|word| word == "ERROR" || word == "WARN")
        })
        .collect()
}

/// `line` without ANSI SGR sequences (`ESC [ ... m`).
fn without_colours(line: &str) -> String {
    let mut plain = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            plain.push(c);
        }
    }
    plain
}

#[test]
fn the_lines_a_first_start_used_to_log_are_caught() {
    let dir = std::env::temp_dir().join(unique_name("paysys-clean-start-filter"));
    std::fs::create_dir_all(&dir).expect("folder");
    let log = dir.join("old.log");
    // As the payments API wrote it before the check for the pre-.v2 queues became quiet.
    std::fs::write(
        &log,
        "\u{1b}[2m2026-12-06T09:02:06.809932Z\u{1b}[0m \u{1b}[31mERROR\u{1b}[0m \u{1b}[1mio_loop\u{1b}[0m\u{1b}[2m:\u{1b}[0m \u{1b}[2mlapin::channel\u{1b}[0m\u{1b}[2m:\u{1b}[0m Channel closed \u{1b}[3mchannel\u{1b}[0m\u{1b}[2m=\u{1b}[0m2 method=Close { reply_code: 404 }\n\
         \u{1b}[2m2026-12-06T09:02:06.9Z\u{1b}[0m \u{1b}[32m INFO\u{1b}[0m payments-api ready\n\
         2026-12-06T09:02:07Z  WARN paysys_amqp: cannot retire the version-1 classic queues yet\n",
    )
    .expect("log");
    let caught = error_and_warn_lines(&log);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(caught.len(), 2, "{caught:?}");
    assert!(caught[0].contains(" ERROR io_loop"), "{caught:?}");
    assert!(caught[1].contains(" WARN "), "{caught:?}");
}

async fn wait_ready(service: &Service, deadline: Instant) {
    let client = http_client();
    let url = format!("http://127.0.0.1:{}/readyz", service.port());
    while get_status(&client, &url).await != Some(200) {
        assert!(
            Instant::now() < deadline,
            "{} not ready; see {}",
            service.name,
            service.log_path().display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// POSTs the README's payment and returns its id.
async fn create_payment(api: &Service) -> String {
    let request = hyper::Request::post(format!("http://127.0.0.1:{}/payments", api.port()))
        .header("content-type", "application/json")
        .header("authorization", API_KEY)
        .body(Full::new(Bytes::from_static(
            br#"{"amount": 70.5, "currency": "USD",
                 "userId": "6f1c0c8e-5b0e-4d8e-9f3a-2b7d1c9e4a10",
                 "payeeId": "1b2c3d4e-5f60-4a1b-8c2d-3e4f5a6b7c8d",
                 "paymentMethodId": "9a8b7c6d-5e4f-4a3b-9c2d-1e0f9a8b7c6d"}"#,
        )))
        .expect("request");
    let response = http_client()
        .request(request)
        .await
        .expect("POST /payments");
    assert_eq!(response.status(), 201);
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    let body: serde_json::Value = serde_json::from_slice(&body).expect("JSON body");
    body["PaymentId"].as_str().expect("PaymentId").to_owned()
}

async fn payment_status(api: &Service, id: &str) -> String {
    let request = hyper::Request::get(format!("http://127.0.0.1:{}/payments/{id}", api.port()))
        .header("authorization", API_KEY)
        .body(Full::default())
        .expect("request");
    let response = http_client()
        .request(request)
        .await
        .expect("GET /payments/{id}");
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    let body: serde_json::Value = serde_json::from_slice(&body).expect("JSON body");
    body["status"].as_str().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn a_first_start_on_a_fresh_vhost_logs_no_error_or_warning() {
    let vhost = FreshVhost::create();
    let db = TestDb::create().await;
    let log_dir = std::env::temp_dir()
        .join("paysys-system-tests")
        .join(&vhost.name);
    std::fs::create_dir_all(&log_dir).expect("log directory");

    let env = |extra: &[(&str, String)]| -> BTreeMap<String, String> {
        let mut env: BTreeMap<String, String> = [
            ("PORT", free_port().to_string()),
            ("AMQP_URL", vhost.url()),
            ("RUST_LOG", "info".into()),
            ("LOG_FORMAT", "text".into()),
            ("PATH", std::env::var("PATH").unwrap_or_default()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        env.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
        env
    };
    let mut api = Service::new(
        "payments-api",
        binary("payments-api"),
        env(&[
            ("DATABASE_URL", db.url.clone()),
            ("API_KEYS", format!("tester={API_KEY}")),
        ]),
        &log_dir,
    );
    let mut risk = Service::new(
        "risk-engine",
        binary("risk-engine"),
        env(&[("RISK_MODE", "random".into())]),
        &log_dir,
    );
    api.start();
    risk.start();
    let deadline = Instant::now() + Duration::from_secs(60);
    wait_ready(&api, deadline).await;
    wait_ready(&risk, deadline).await;

    // The whole path runs once: publish, consume, decide, publish back, apply.
    let id = create_payment(&api).await;
    loop {
        let status = payment_status(&api, &id).await;
        if status == "approved" || status == "declined" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "payment {id} still {status:?}; see {}",
            log_dir.display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(api.terminate().await.is_some_and(|s| s.success()));
    assert!(risk.terminate().await.is_some_and(|s| s.success()));

    let mut noisy = Vec::new();
    for service in [&api, &risk] {
        let log = service.log_path();
        let text = std::fs::read_to_string(log).unwrap_or_default();
        assert!(
            text.contains("INFO"),
            "{} logged nothing at INFO: is {} the right log?",
            service.name,
            log.display()
        );
        noisy.extend(
            error_and_warn_lines(log)
                .into_iter()
                .map(|line| format!("{}: {line}", service.name)),
        );
    }
    assert!(
        noisy.is_empty(),
        "a first start logged ERROR/WARN lines:\n{}",
        noisy.join("\n")
    );
}
