//! Operator benchmark: prints
//! 1. the build step (validated resource -> every child object) per resource, over 1,000
//!    `PaymentSystem` resources;
//! 2. a full reconcile (secrets, validate, build, apply, prune, status) of 1,000 resources
//!    against an in-process mock API server;
//! 3. the resident memory of the real `paysys-operator` binary when idle, connected to a
//!    minimal fake API server over HTTP.
//!
//! Run: `cargo bench -p paysys-operator --bench operator`.
//! Targets: build step under 1 ms per resource; idle operator under 30 MiB resident.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body as AxumBody;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response as AxumResponse};
use http::{Method, Request as HttpRequest, Response};
use k8s_openapi::ByteString;
use kube::client::Body;
use kube::core::error_boundary::DeserializeGuard;
use paysys_operator::build::{build, secrets};
use paysys_operator::controller::{self, Context};
use paysys_operator::crd::PaymentSystem;
use paysys_operator::metrics::Metrics;
use paysys_operator::observe::SecretData;
use paysys_operator::validate;
use serde_json::{Value, json};

const RESOURCES: usize = 1_000;

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let systems: Vec<PaymentSystem> = (0..RESOURCES).map(resource).collect();
    build_step(&systems);
    runtime.block_on(full_reconcile(&systems));
    runtime.block_on(idle_memory());
}

/// A varied resource: every fourth has external dependencies, every third custom rules.
fn resource(i: usize) -> PaymentSystem {
    let mut spec = json!({"paymentsApi": {"replicas": 1 + (i % 4)}});
    if i.is_multiple_of(4) {
        spec["rabbitmq"] = json!({"external": {"secretName": "broker"}});
        spec["database"] = json!({"managed": {"storage": {"size": "10Gi"}}});
    }
    if i.is_multiple_of(3) {
        spec["riskEngine"] = json!({"rules": {"declineThreshold": 80, "allowedCurrencies": ["USD", "EUR"],
            "maxAmount": {"USD": "10000"}, "velocity": {"windowSeconds": 600, "maxCount": 10}}});
    }
    serde_json::from_value(json!({
        "apiVersion": "paysys.io/v1alpha1", "kind": "PaymentSystem",
        "metadata": {"name": format!("shop-{i}"), "namespace": format!("team-{}", i % 10),
            "uid": format!("00000000-0000-0000-0000-{i:012}"), "generation": 1},
        "spec": spec,
    }))
    .unwrap()
}

fn cluster_secrets(ps: &PaymentSystem) -> SecretData {
    let mut data = SecretData::new();
    for (secret, name) in paysys_operator::observe::secrets::generated_secrets(ps) {
        data.insert(
            name,
            secrets::template(ps, secret, "0123456789abcdef0123456789abcdef")
                .data
                .unwrap(),
        );
    }
    data.insert(
        "broker".into(),
        [(
            "url".to_string(),
            ByteString(b"amqps://u:p@mq.example.com/prod".to_vec()),
        )]
        .into(),
    );
    data
}

fn build_step(systems: &[PaymentSystem]) {
    let validated: Vec<_> = systems
        .iter()
        .map(|ps| validate::validate(ps, &cluster_secrets(ps)).unwrap())
        .collect();
    let mut objects = 0;
    // Warm-up, then the measured pass.
    for system in &validated {
        objects += build(system).deployments.len();
    }
    let started = Instant::now();
    for system in &validated {
        let children = build(system);
        objects += children.deployments.len();
        std::hint::black_box(children);
    }
    let build_time = started.elapsed();
    let secrets: Vec<_> = systems.iter().map(cluster_secrets).collect();
    let started = Instant::now();
    for (ps, secrets) in systems.iter().zip(&secrets) {
        let system = validate::validate(ps, secrets).unwrap();
        std::hint::black_box(build(&system));
    }
    let both = started.elapsed();
    println!(
        "build step: {RESOURCES} resources in {:.1} ms = {:.1} µs per resource (validate + build: {:.1} µs per resource) [{objects} Deployments]",
        build_time.as_secs_f64() * 1e3,
        build_time.as_secs_f64() * 1e6 / RESOURCES as f64,
        both.as_secs_f64() * 1e6 / RESOURCES as f64,
    );
}

/// Answers every request the way a healthy API server would: generated Secrets absent (so
/// each reconcile creates them), applies echoed with ready Deployments, no children to
/// prune, status and events accepted.
async fn mock_api(
    mut handle: tower_test::mock::Handle<HttpRequest<Body>, Response<Body>>,
    counter: Arc<Mutex<u64>>,
) {
    while let Some((request, send)) = handle.next_request().await {
        *counter.lock().unwrap() += 1;
        let method = request.method().clone();
        let path = request.uri().path().to_owned();
        let body = request.into_body().collect_bytes().await.unwrap();
        let body: Value = if body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&body).unwrap()
        };
        let (code, response) = match method {
            Method::GET if path.contains("/secrets/") => {
                if path.ends_with("/broker") {
                    (
                        200,
                        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "broker"}, "data": {"url": "YW1xcDovL3g="}}),
                    )
                } else {
                    (
                        404,
                        json!({"kind": "Status", "apiVersion": "v1", "code": 404, "reason": "NotFound", "status": "Failure", "metadata": {}}),
                    )
                }
            }
            // The managed servers' Deployments, read for their storage before the first
            // apply: none yet.
            Method::GET if path.contains("/deployments/") => (
                404,
                json!({"kind": "Status", "apiVersion": "v1", "code": 404, "reason": "NotFound", "status": "Failure", "metadata": {}}),
            ),
            // Listing children to prune: none left over.
            Method::GET => (
                200,
                json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": "1"}, "items": []}),
            ),
            Method::POST => (201, body),
            Method::PATCH if path.ends_with("/status") => {
                let mut object = body;
                object["metadata"] = json!({"name": "x", "namespace": "y"});
                object["spec"] = json!({});
                (200, object)
            }
            Method::PATCH => {
                let mut object = body;
                object["metadata"]["generation"] = json!(1);
                if object["kind"] == "Deployment" {
                    let replicas = object["spec"]["replicas"].clone();
                    object["status"] = json!({"observedGeneration": 1, "replicas": replicas,
                        "updatedReplicas": replicas, "readyReplicas": replicas});
                }
                (200, object)
            }
            Method::DELETE => (
                404,
                json!({"kind": "Status", "apiVersion": "v1", "code": 404, "reason": "NotFound", "status": "Failure", "metadata": {}}),
            ),
            _ => (405, json!({})),
        };
        send.send_response(
            Response::builder()
                .status(code)
                .body(Body::from(serde_json::to_vec(&response).unwrap()))
                .unwrap(),
        );
    }
}

async fn full_reconcile(systems: &[PaymentSystem]) {
    let (service, handle) = tower_test::mock::pair::<HttpRequest<Body>, Response<Body>>();
    let counter = Arc::new(Mutex::new(0));
    tokio::spawn(mock_api(handle, counter.clone()));
    let client = kube::Client::new(service, "default");
    let ctx = Arc::new(Context::new(client, Arc::new(Metrics::default()), None));
    let mut latencies = Vec::with_capacity(systems.len());
    let started = Instant::now();
    for ps in systems {
        let one = Instant::now();
        controller::reconcile(Arc::new(DeserializeGuard(Ok(ps.clone()))), ctx.clone())
            .await
            .expect("reconcile succeeds against the mock");
        latencies.push(one.elapsed());
    }
    let total = started.elapsed();
    latencies.sort();
    let requests = *counter.lock().unwrap();
    println!(
        "full reconcile (mock API, sequential): {RESOURCES} resources in {:.0} ms = {:.0} µs per resource (p50 {:.0} µs, p99 {:.0} µs), {:.1} API requests per resource",
        total.as_secs_f64() * 1e3,
        total.as_secs_f64() * 1e6 / RESOURCES as f64,
        latencies[latencies.len() / 2].as_secs_f64() * 1e6,
        latencies[latencies.len() * 99 / 100].as_secs_f64() * 1e6,
        requests as f64 / RESOURCES as f64,
    );
}

/// A minimal API server over HTTP for the real binary: empty lists, watches that stay open,
/// and an in-memory store for the Lease.
#[derive(Clone, Default)]
struct FakeApi {
    objects: Arc<Mutex<HashMap<String, Value>>>,
}

async fn fake_api(State(api): State<FakeApi>, request: Request) -> AxumResponse {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let query = request.uri().query().unwrap_or_default().to_owned();
    let bytes = axum::body::to_bytes(request.into_body(), 1 << 20)
        .await
        .unwrap();
    let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    let segments = path.trim_matches('/').split('/').count();
    // /api/v1/<resource> or /apis/<g>/<v>/<resource> (+ namespaces/<ns>): collections.
    let is_collection = (path.starts_with("/api/") && segments % 2 == 1)
        || (path.starts_with("/apis/") && segments % 2 == 0);
    let json = |code: StatusCode, value: Value| {
        (
            code,
            [("content-type", "application/json")],
            value.to_string(),
        )
            .into_response()
    };
    if method == Method::GET && query.contains("watch=true") {
        // Never-ending watch: no events, the operator idles.
        let stream = futures::stream::pending::<Result<Vec<u8>, std::io::Error>>();
        return (
            StatusCode::OK,
            [("content-type", "application/json")],
            AxumBody::from_stream(stream),
        )
            .into_response();
    }
    if method == Method::GET && is_collection {
        return json(
            StatusCode::OK,
            json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": "1"}, "items": []}),
        );
    }
    let mut objects = api.objects.lock().unwrap();
    match method {
        Method::GET => match objects.get(&path) {
            Some(object) => json(StatusCode::OK, object.clone()),
            None => json(
                StatusCode::NOT_FOUND,
                json!({"kind": "Status", "apiVersion": "v1", "code": 404, "reason": "NotFound", "status": "Failure", "metadata": {}}),
            ),
        },
        Method::POST => {
            let name = body["metadata"]["name"].as_str().unwrap_or("x").to_owned();
            let mut object = body;
            object["metadata"]["resourceVersion"] = json!("1");
            objects.insert(format!("{path}/{name}"), object.clone());
            json(StatusCode::CREATED, object)
        }
        Method::PATCH | Method::PUT => {
            let mut object = objects.get(&path).cloned().unwrap_or(json!({}));
            merge(&mut object, &body);
            let version = object["metadata"]["resourceVersion"]
                .as_str()
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(1);
            object["metadata"]["resourceVersion"] = json!((version + 1).to_string());
            objects.insert(path, object.clone());
            json(StatusCode::OK, object)
        }
        _ => json(StatusCode::METHOD_NOT_ALLOWED, json!({})),
    }
}

fn merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(target), Value::Object(patch)) => {
            for (key, value) in patch {
                if value.is_null() {
                    target.remove(key);
                } else {
                    merge(target.entry(key.clone()).or_insert(Value::Null), value);
                }
            }
        }
        (target, patch) => *target = patch.clone(),
    }
}

async fn idle_memory() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api_port = listener.local_addr().unwrap().port();
    let app = axum::Router::new()
        .fallback(fake_api)
        .with_state(FakeApi::default());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let dir = std::env::temp_dir().join(format!("paysys-operator-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: http://127.0.0.1:{api_port}\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n    namespace: default\ncurrent-context: fake\nusers:\n- name: fake\n  user: {{}}\n"
        ),
    )
    .unwrap();
    let http_port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_paysys-operator"))
        .env("KUBECONFIG", &kubeconfig)
        .env("HTTP_PORT", http_port.to_string())
        .env("POD_NAME", "bench")
        .env("RUST_LOG", "warn")
        .kill_on_drop(true)
        .spawn()
        .expect("the operator binary starts");
    let pid = child.id().unwrap();
    // Ready, then leading (lease acquired), then left alone for a while.
    let metrics_url = format!("http://127.0.0.1:{http_port}/metrics");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        assert!(
            Instant::now() < deadline,
            "the operator did not become leader"
        );
        if let Some(text) = http_get(http_port, "/metrics").await
            && text.contains("paysys_operator_leader 1")
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(10)).await;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find(|line| line.starts_with(name))
            .and_then(|line| line.split_whitespace().nth(1))
            .and_then(|kib| kib.parse::<f64>().ok())
            .unwrap_or(f64::NAN)
    };
    println!(
        "idle operator (leader; watching PaymentSystems, {} child kinds and Secret metadata; no resources): resident {:.1} MiB (peak {:.1} MiB) [{metrics_url}]",
        paysys_operator::build::Children::kinds().len(),
        field("VmRSS:") / 1024.0,
        field("VmHWM:") / 1024.0,
    );
    child.kill().await.ok();
    std::fs::remove_dir_all(&dir).ok();
}

/// A tiny HTTP/1.0 GET, to avoid an HTTP client dependency for one probe.
async fn http_get(port: u16, path: &str) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await.ok()?;
    Some(response)
}
