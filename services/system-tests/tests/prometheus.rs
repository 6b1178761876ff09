//! The shipped alerts and dashboards against a real Prometheus (Debian's `prometheus`, which
//! scripts/ensure-prometheus.sh installs) scraping the real payments API, risk engine and
//! operator processes:
//! - during a short end-to-end run (payments created and decided, a poison message on each
//!   side, a PaymentSystem reconciled and one refused), every dashboard panel's query returns at
//!   least one series;
//! - stopping the risk engine makes `PaysysNoRiskEngine` fire and
//!   `PaysysDecisionBacklogGrowing` go pending, with the rules' `for` windows shortened to 2 s
//!   (their expressions and thresholds are the shipped ones).
//!
//! The scrape targets carry the labels the chart's PodMonitor gives pods (`namespace`,
//! `paymentsystem`, `component`), so the queries are the dashboards' own.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use lapin::BasicProperties;
use lapin::options::BasicPublishOptions;
use paysys_system_tests::System;
use paysys_system_tests::driver::{call, http_client};
use paysys_system_tests::process::binary;
use paysys_testkit::envtest::ControlPlane;
use paysys_testkit::{eventually, free_port};
use serde_json::{Value, json};
use tokio::process::{Child, Command};

const NAMESPACE: &str = "prom";
const SYSTEM: &str = "shop";
/// How often Prometheus scrapes and evaluates here (the chart's default is 30 s).
const INTERVAL: &str = "1s";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A Prometheus server on loopback with its own data folder, stopped on drop.
struct Prometheus {
    port: u16,
    child: Child,
    dir: PathBuf,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        if std::thread::panicking() {
            let log = std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            eprintln!(
                "--- prometheus log ---\n{}",
                lines[lines.len().saturating_sub(30)..].join("\n")
            );
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Prometheus {
    /// Scrapes `targets` (`(address, labels)`) every [`INTERVAL`] and evaluates the shipped
    /// alerts with every `for:` shortened to 2 s.
    async fn start(targets: &[(String, Value)]) -> Prometheus {
        let dir = std::env::temp_dir().join(paysys_testkit::unique_name("paysys-prometheus"));
        std::fs::create_dir_all(&dir).unwrap();
        let rules =
            std::fs::read_to_string(root().join("charts/paysys/files/prometheus/alerts.yaml"))
                .expect("the shipped alerts");
        let shortened: String = rules
            .lines()
            .map(|line| match line.trim_start().strip_prefix("for: ") {
                Some(_) => format!("{}for: 2s", &line[..line.len() - line.trim_start().len()]),
                None => line.to_owned(),
            })
            .collect::<Vec<_>>()
            .join("\n");
        assert_ne!(shortened, rules, "the alerts have for: windows to shorten");
        std::fs::write(dir.join("alerts.yaml"), shortened).unwrap();
        let scrape_configs: Vec<Value> = targets
            .iter()
            .enumerate()
            .map(|(i, (address, labels))| {
                json!({"job_name": format!("target-{i}"), "static_configs": [
                    {"targets": [address], "labels": labels}]})
            })
            .collect();
        let config = json!({
            "global": {"scrape_interval": INTERVAL, "evaluation_interval": INTERVAL},
            "rule_files": [dir.join("alerts.yaml")],
            "scrape_configs": scrape_configs,
        });
        // JSON is YAML.
        std::fs::write(dir.join("prometheus.yml"), config.to_string()).unwrap();
        let port = free_port();
        let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
        let child = Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect(
                "run prometheus (Debian: apt-get install prometheus; scripts/test.sh installs it)",
            );
        let prometheus = Prometheus { port, child, dir };
        eventually(Duration::from_secs(30), || async {
            prometheus
                .get("/-/ready")
                .await
                .filter(|(status, _)| *status == 200)
        })
        .await
        .expect("prometheus ready within 30 s");
        prometheus
    }

    async fn get(&self, path_and_query: &str) -> Option<(u16, Value)> {
        let request =
            hyper::Request::get(format!("http://127.0.0.1:{}{path_and_query}", self.port))
                .body(Full::<Bytes>::default())
                .ok()?;
        let response = tokio::time::timeout(Duration::from_secs(5), http_client().request(request))
            .await
            .ok()?
            .ok()?;
        let status = response.status().as_u16();
        let body = response.into_body().collect().await.ok()?.to_bytes();
        Some((status, serde_json::from_slice(&body).unwrap_or(Value::Null)))
    }

    /// The series an instant query returns.
    async fn query(&self, query: &str) -> Vec<Value> {
        let encoded: String = form_urlencoded::Serializer::new(String::new())
            .append_pair("query", query)
            .finish();
        let (status, body) = self
            .get(&format!("/api/v1/query?{encoded}"))
            .await
            .expect("prometheus answers");
        assert_eq!(status, 200, "{query}: {body}");
        body["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// The state (`pending`, `firing`) of each active alert called `name`.
    async fn alert_states(&self, name: &str) -> Vec<String> {
        let (_, body) = self
            .get("/api/v1/alerts")
            .await
            .expect("prometheus answers");
        body["data"]["alerts"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|alert| alert["labels"]["alertname"] == name)
            .filter_map(|alert| alert["state"].as_str().map(str::to_owned))
            .collect()
    }
}

/// Every panel query of the shipped dashboards, with Grafana's variables filled in.
fn dashboard_queries() -> Vec<(String, String)> {
    let mut queries = Vec::new();
    let folder = root().join("charts/paysys/files/dashboards");
    let mut files: Vec<PathBuf> = std::fs::read_dir(folder)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect();
    files.sort();
    for path in files {
        let dashboard: Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        for panel in dashboard["panels"].as_array().unwrap() {
            for target in panel["targets"].as_array().into_iter().flatten() {
                let query = target["expr"]
                    .as_str()
                    .unwrap()
                    .replace("$__rate_interval", "1m")
                    .replace("$namespace", ".*")
                    .replace("$paymentsystem", ".*");
                let file = path.file_name().unwrap().to_string_lossy().into_owned();
                queries.push((format!("{file} / {}", panel["title"]), query));
            }
        }
    }
    queries
}

/// Creates `n` payments; some are declined by the default rules (a payer paying themselves).
async fn create_payments(base: &str, n: usize) {
    for i in 0..n {
        let user = uuid::Uuid::new_v4();
        let payee = if i % 4 == 0 {
            user
        } else {
            uuid::Uuid::new_v4()
        };
        let body = json!({"amount": 70.5, "currency": "USD", "userId": user,
            "payeeId": payee, "paymentMethodId": uuid::Uuid::new_v4()});
        let (status, answer) = call("POST", &format!("{base}/payments"), Some(body)).await;
        assert_eq!(status, 201, "{answer}");
    }
}

/// The operator process against the test binary's control plane, watching `namespace`.
async fn start_operator(cluster: &ControlPlane, namespace: &str, log_dir: &Path) -> (Child, u16) {
    let port = free_port();
    let log = std::fs::File::create(log_dir.join("operator.log")).unwrap();
    let child = Command::new(binary("paysys-operator"))
        .env_clear()
        .env("KUBECONFIG", cluster.admin_kubeconfig())
        .env("HTTP_PORT", port.to_string())
        .env("WATCH_NAMESPACE", namespace)
        .env("LEADER_ELECTION", "false")
        .env("POD_NAMESPACE", namespace)
        .env("POD_NAME", "operator-0")
        .env("LOG_FORMAT", "text")
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .expect("start the operator binary");
    (child, port)
}

/// The shipped CRD, then a PaymentSystem the operator builds and one it refuses.
async fn create_payment_systems(cluster: &ControlPlane, namespace: &str) {
    let client = cluster.admin();
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd: CustomResourceDefinition = serde_norway::from_str(
        &std::fs::read_to_string(root().join("crds/paymentsystems.yaml")).unwrap(),
    )
    .unwrap();
    let name = crd.metadata.name.clone().unwrap();
    crds.patch(
        &name,
        &PatchParams::apply("prometheus-test").force(),
        &Patch::Apply(&crd),
    )
    .await
    .expect("apply the CRD");
    eventually(Duration::from_secs(30), || async {
        let crd = crds.get(&name).await.ok()?;
        crd.status?
            .conditions?
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True")
            .then_some(())
    })
    .await
    .expect("the CRD Established");
    let resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("paysys.io", "v1alpha1", "PaymentSystem"),
        "paymentsystems",
    );
    let systems: Api<DynamicObject> = Api::namespaced_with(client, namespace, &resource);
    for (name, spec) in [
        (SYSTEM, json!({})),
        // A Secret that does not exist: the operator refuses it (a reconcile failure).
        (
            "broken",
            json!({"paymentsApi": {"auth": {"secretName": "missing"}}}),
        ),
    ] {
        let object: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "paysys.io/v1alpha1", "kind": "PaymentSystem",
            "metadata": {"name": name, "namespace": namespace}, "spec": spec,
        }))
        .unwrap();
        systems
            .create(&PostParams::default(), &object)
            .await
            .unwrap_or_else(|error| panic!("create PaymentSystem {name}: {error}"));
    }
}

/// One poison message on each side, so both dead-letter counters have a series.
async fn publish_poison(system: &System) {
    let (_connection, channel) = system.broker.channel().await;
    let topology = &system.broker.topology;
    for (exchange, routing_key) in [
        (
            &topology.payments_exchange,
            paysys_core::topology::PAYMENT_ROUTING_KEY,
        ),
        (
            &topology.decisions_exchange,
            paysys_core::topology::DECISION_ROUTING_KEY,
        ),
    ] {
        channel
            .basic_publish(
                exchange.as_str().into(),
                routing_key.into(),
                BasicPublishOptions::default(),
                b"not json",
                BasicProperties::default().with_delivery_mode(2),
            )
            .await
            .expect("publish")
            .await
            .expect("confirmed");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_panel_has_data_and_stopping_the_risk_engine_raises_the_alerts() {
    let _serial = paysys_system_tests::SERIAL.lock().await;
    let Some(cluster) = ControlPlane::get() else {
        return; // ControlPlane::get printed why (and panics under CI=true)
    };
    let namespace = cluster.namespace("prometheus").await;
    let mut system = System::start_with(1, 1, &[("RISK_MODE", "rules")]).await;
    let (_operator, operator_port) = start_operator(cluster, &namespace, &system.log_dir).await;
    create_payment_systems(cluster, &namespace).await;

    let pod = |component: &str| {
        json!({"namespace": NAMESPACE, "paymentsystem": SYSTEM,
        "component": component, "pod": format!("{component}-0")})
    };
    let targets = vec![
        (
            format!("127.0.0.1:{}", system.apis[0].port()),
            pod("payments-api"),
        ),
        (
            format!("127.0.0.1:{}", system.risks[0].port()),
            pod("risk-engine"),
        ),
        (
            format!("127.0.0.1:{operator_port}"),
            json!({"namespace": namespace, "pod": "operator-0"}),
        ),
    ];
    let prometheus = Prometheus::start(&targets).await;

    let base = system.api_urls()[0].clone();
    create_payments(&base, 40).await;
    publish_poison(&system).await;
    // Traffic over a few scrapes, so rates have two samples and histograms counts.
    for _ in 0..5 {
        create_payments(&base, 10).await;
        let (status, _) = call("GET", &format!("{base}/v1/payments?limit=5"), None).await;
        assert_eq!(status, 200);
        tokio::time::sleep(Duration::from_millis(700)).await;
    }

    let queries = dashboard_queries();
    assert!(queries.len() >= 10, "the dashboards' panels");
    let mut empty = Vec::new();
    for (panel, query) in &queries {
        let series = eventually(Duration::from_secs(20), || async {
            let series = prometheus.query(query).await;
            (!series.is_empty()).then_some(series)
        })
        .await;
        if series.is_none() {
            empty.push(format!("{panel}: {query}"));
        }
    }
    assert!(
        empty.is_empty(),
        "panels without data:\n{}",
        empty.join("\n")
    );

    // The risk engine stops: nothing decides payments any more.
    assert!(
        prometheus
            .alert_states("PaysysNoRiskEngine")
            .await
            .is_empty()
    );
    system.risks[0].kill().await;
    let fired = eventually(Duration::from_secs(30), || async {
        let states = prometheus.alert_states("PaysysNoRiskEngine").await;
        states
            .iter()
            .any(|state| state == "firing")
            .then_some(states)
    })
    .await;
    assert!(
        fired.is_some(),
        "PaysysNoRiskEngine fires once the engine is down"
    );
    // Payments keep coming and wait: the oldest passes the alert's 30 s.
    create_payments(&base, 5).await;
    let backlog = eventually(Duration::from_secs(60), || async {
        let states = prometheus
            .alert_states("PaysysDecisionBacklogGrowing")
            .await;
        (!states.is_empty()).then_some(states)
    })
    .await;
    assert!(
        backlog.is_some(),
        "PaysysDecisionBacklogGrowing goes pending or firing while nothing decides"
    );
    system.shutdown().await;
}
