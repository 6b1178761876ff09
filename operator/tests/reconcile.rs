//! Reconcile tests against a scripted API server: every request the operator makes, in order,
//! with its method, path, field manager and body. Kept for what a real API server cannot be
//! made to do on demand: answer 500, or hold a resource the operator cannot parse; and to pin
//! that a bad spec or a missing Secret writes nothing at all. Everything a real server can show
//! is in `tests/real_apiserver`.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use common::api_server::{self, ApiServer, not_found, server_error};
use common::system;
use http::Method;
use kube::core::error_boundary::{DeserializeGuard, InvalidObject};
use kube::runtime::controller::Action;
use paysys_operator::build::Children;
use paysys_operator::controller::{self, Context, Error};
use paysys_operator::crd::PaymentSystem;
use paysys_operator::metrics::Metrics;
use serde_json::{Value, json};
use tokio::task::JoinHandle;

const CORE: &str = "/api/v1/namespaces/payments";
const STATUS: &str = "/apis/paysys.io/v1alpha1/namespaces/payments/paymentsystems/shop/status";
const APPS: &str = "/apis/apps/v1/namespaces/payments";
const EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/payments/events";

fn start(ps: PaymentSystem) -> (ApiServer, Arc<Context>, JoinHandle<Result<Action, Error>>) {
    start_guard(DeserializeGuard(Ok(ps)))
}

fn start_guard(
    guard: DeserializeGuard<PaymentSystem>,
) -> (ApiServer, Arc<Context>, JoinHandle<Result<Action, Error>>) {
    let (client, server) = api_server::client();
    let ctx = Arc::new(Context::new(client, Arc::new(Metrics::default()), None));
    let task = tokio::spawn(controller::reconcile(Arc::new(guard), ctx.clone()));
    (server, ctx, task)
}

async fn finish(task: JoinHandle<Result<Action, Error>>) -> Result<Action, Error> {
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("reconcile finished")
        .expect("reconcile did not panic")
}

const GENERATED: [&str; 3] = [
    "shop-api-key",
    "shop-rabbitmq-credentials",
    "shop-postgresql-credentials",
];

/// The three generated Secrets: created when absent, or found and left alone.
async fn expect_generated_secrets(server: &mut ApiServer, exist: bool) -> Vec<Value> {
    let mut created = Vec::new();
    for name in GENERATED {
        let path = format!("{CORE}/secrets/{name}");
        if exist {
            server
                .expect(Method::GET, &path, |_| (200, existing_secret(name)))
                .await;
        } else {
            server.expect(Method::GET, &path, |_| not_found()).await;
            let seen = server
                .expect(Method::POST, &format!("{CORE}/secrets"), |seen| {
                    (201, seen.body.clone())
                })
                .await;
            assert_eq!(seen.body["metadata"]["name"], name);
            assert_eq!(
                seen.body["metadata"]["ownerReferences"][0]["kind"],
                "PaymentSystem"
            );
            created.push(seen.body);
        }
    }
    created
}

fn existing_secret(name: &str) -> Value {
    // "existing-key-0123456789" and friends, base64.
    let data = match name {
        "shop-api-key" => {
            json!({"api-key": "ZXhpc3Rpbmcta2V5LTAxMjM0NTY3ODk=", "api-keys": "ZGVmYXVsdD1leGlzdGluZy1rZXktMDEyMzQ1Njc4OQ=="})
        }
        _ => json!({"url": "YW1xcDovL3U6cEBob3N0LzVm", "username": "cGF5c3lz", "password": "cA=="}),
    };
    json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": "payments"}, "data": data})
}

async fn expect_status(server: &mut ApiServer) -> Value {
    let seen = server.expect_apply_status(STATUS).await;
    assert_eq!(seen.body["kind"], "PaymentSystem");
    seen.body["status"].clone()
}

fn condition<'a>(status: &'a Value, kind: &str) -> &'a Value {
    status["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == kind)
        .unwrap_or_else(|| panic!("no {kind} condition in {status}"))
}

fn assert_condition(status: &Value, kind: &str, value: &str, reason: &str) {
    let c = condition(status, kind);
    assert_eq!(
        (c["status"].as_str(), c["reason"].as_str()),
        (Some(value), Some(reason)),
        "{kind}: {c}"
    );
    assert_eq!(c["observedGeneration"], status["observedGeneration"]);
}

/// The reads of the managed servers' Deployments that tell whether they still run on the
/// emptyDir of 0.1.0 (servers without `storage` only); here none exists yet.
async fn expect_storage_reads(server: &mut ApiServer, deployments: &[&str]) {
    for name in deployments {
        server
            .expect(Method::GET, &format!("{APPS}/deployments/{name}"), |_| {
                not_found()
            })
            .await;
    }
}

#[tokio::test]
async fn failed_apply_requeues_with_backoff_and_reports_degraded() {
    let (mut server, ctx, task) = start(system(""));
    expect_generated_secrets(&mut server, true).await;
    expect_storage_reads(&mut server, &["shop-rabbitmq", "shop-postgresql"]).await;
    server
        .expect(
            Method::PATCH,
            &format!("{CORE}/configmaps/shop-risk-rules"),
            |_| server_error(),
        )
        .await;
    let status = expect_status(&mut server).await;
    assert_condition(&status, "Degraded", "True", "ApplyFailed");
    assert_condition(&status, "Ready", "False", "ApplyFailed");
    assert!(
        condition(&status, "Degraded")["message"]
            .as_str()
            .unwrap()
            .contains("shop-risk-rules")
    );
    let event = server
        .expect(Method::POST, EVENTS, |seen| (201, seen.body.clone()))
        .await;
    assert_eq!(event.body["type"], "Warning");
    assert_eq!(event.body["reason"], "ApplyFailed");
    assert_eq!(event.body["regarding"]["name"], "shop");
    assert_eq!(event.body["regarding"]["kind"], "PaymentSystem");
    server.expect_silence().await;
    let error = finish(task).await.unwrap_err();
    assert_eq!(error.reason(), "ApplyFailed");
    // The error policy backs off exponentially per resource.
    let guard = Arc::new(DeserializeGuard(Ok(system(""))));
    let first = controller::error_policy(guard.clone(), &error, ctx.clone());
    let second = controller::error_policy(guard, &error, ctx.clone());
    assert_eq!(first, Action::requeue(Duration::from_secs(5)));
    assert_eq!(second, Action::requeue(Duration::from_secs(10)));
    let metrics = ctx.metrics.encode();
    assert!(
        metrics.contains("paysys_operator_reconcile_failures_total{reason=\"ApplyFailed\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn missing_user_secret_is_reported_not_retried_silently() {
    let (mut server, _ctx, task) = start(system("database:\n  external: {secretName: db}"));
    // Generated: API key and RabbitMQ credentials only.
    for name in ["shop-api-key", "shop-rabbitmq-credentials"] {
        server
            .expect(Method::GET, &format!("{CORE}/secrets/{name}"), |_| {
                (200, existing_secret(name))
            })
            .await;
    }
    server
        .expect(Method::GET, &format!("{CORE}/secrets/db"), |_| not_found())
        .await;
    expect_storage_reads(&mut server, &["shop-rabbitmq"]).await;
    let status = expect_status(&mut server).await;
    assert_condition(&status, "Degraded", "True", "SecretNotFound");
    assert_eq!(
        condition(&status, "Degraded")["message"],
        "Secret db not found"
    );
    let event = server
        .expect(Method::POST, EVENTS, |seen| (201, seen.body.clone()))
        .await;
    assert_eq!(event.body["reason"], "SecretNotFound");
    server.expect_silence().await;
    assert_eq!(finish(task).await.unwrap_err().reason(), "SecretNotFound");
}

/// A step that fails answers with its own reason, writes nothing after it, and is reported.
async fn expect_failed_step(server: &mut ApiServer, path: &str, reason: &str, object: &str) {
    server.expect(Method::GET, path, |_| server_error()).await;
    let status = expect_status(server).await;
    assert_condition(&status, "Degraded", "True", reason);
    assert!(
        condition(&status, "Degraded")["message"]
            .as_str()
            .unwrap()
            .contains(object),
        "{status}"
    );
    let event = server
        .expect(Method::POST, EVENTS, |seen| (201, seen.body.clone()))
        .await;
    assert_eq!(event.body["reason"], reason);
    server.expect_silence().await;
}

/// The API server failing to answer discovery is its own reason, and nothing is applied.
#[tokio::test]
async fn a_failed_crd_check_is_reported_and_applies_nothing() {
    let (mut server, _ctx, task) = start(system("database: {cloudNativePG: {}}"));
    for name in ["shop-api-key", "shop-rabbitmq-credentials"] {
        server
            .expect(Method::GET, &format!("{CORE}/secrets/{name}"), |_| {
                (200, existing_secret(name))
            })
            .await;
    }
    // CloudNativePG's Secret does not exist yet: read, absent, and no error.
    server
        .expect(Method::GET, &format!("{CORE}/secrets/shop-pg-app"), |_| {
            not_found()
        })
        .await;
    // Only the managed broker's storage is looked at: the operated database has no
    // Deployment of ours.
    expect_storage_reads(&mut server, &["shop-rabbitmq"]).await;
    expect_failed_step(
        &mut server,
        "/apis/postgresql.cnpg.io/v1",
        "CrdCheckFailed",
        "clusters.postgresql.cnpg.io",
    )
    .await;
    assert_eq!(finish(task).await.unwrap_err().reason(), "CrdCheckFailed");
}

#[tokio::test]
async fn a_failed_storage_read_is_reported_as_such_and_applies_nothing() {
    let (mut server, _ctx, task) = start(system(""));
    expect_generated_secrets(&mut server, true).await;
    expect_failed_step(
        &mut server,
        &format!("{APPS}/deployments/shop-rabbitmq"),
        "StorageReadFailed",
        "shop-rabbitmq",
    )
    .await;
    assert_eq!(
        finish(task).await.unwrap_err().reason(),
        "StorageReadFailed"
    );
}

#[tokio::test]
async fn a_failed_replicas_handover_is_reported_as_such_and_applies_nothing() {
    let (mut server, _ctx, task) = start(system(
        "paymentsApi: {autoscaling: {maxReplicas: 4}}\nrabbitmq: {managed: {storage: {size: 1Gi}}}\ndatabase: {managed: {storage: {size: 1Gi}}}",
    ));
    expect_generated_secrets(&mut server, true).await;
    expect_failed_step(
        &mut server,
        &format!("{APPS}/deployments/shop-payments-api"),
        "ReplicasHandoverFailed",
        "shop-payments-api",
    )
    .await;
    assert_eq!(
        finish(task).await.unwrap_err().reason(),
        "ReplicasHandoverFailed"
    );
}

#[tokio::test]
async fn invalid_spec_creates_nothing() {
    let (mut server, _ctx, task) = start(system("paymentsApi: {replicas: -2}"));
    let status = expect_status(&mut server).await;
    assert_condition(&status, "Degraded", "True", "InvalidSpec");
    server
        .expect(Method::POST, EVENTS, |seen| (201, seen.body.clone()))
        .await;
    server.expect_silence().await;
    assert_eq!(finish(task).await.unwrap_err().reason(), "InvalidSpec");
}

#[tokio::test]
async fn paused_changes_nothing_and_writes_its_status_once() {
    let ps = system("paused: true");
    let (mut server, _ctx, task) = start(ps.clone());
    let status = expect_status(&mut server).await;
    assert_condition(&status, "Progressing", "False", "Paused");
    assert_condition(&status, "Degraded", "False", "Paused");
    server.expect_silence().await;
    assert_eq!(finish(task).await.unwrap(), Action::await_change());

    // Reconciled again with that status in place: not a single request.
    let mut ps = ps;
    ps.status = Some(serde_json::from_value(status).unwrap());
    let (mut server, _ctx, task) = start(ps);
    server.expect_silence().await;
    assert_eq!(finish(task).await.unwrap(), Action::await_change());
}

#[tokio::test]
async fn unparsable_resource_gets_a_status_and_an_event_not_a_crash_loop() {
    let metadata: kube::api::ObjectMeta = serde_json::from_value(json!({
        "name": "shop", "namespace": "payments", "uid": "u-1", "generation": 3
    }))
    .unwrap();
    let guard = DeserializeGuard(Err(InvalidObject {
        error: "spec.riskEngine.mode: unknown variant `sometimes`".into(),
        metadata,
    }));
    let (mut server, _ctx, task) = start_guard(guard);
    let seen = server
        .expect(Method::PATCH, STATUS, |seen| (200, json!({"apiVersion": "paysys.io/v1alpha1", "kind": "PaymentSystem", "metadata": {"name": "shop"}, "status": seen.body["status"].clone()})))
        .await;
    assert!(
        !seen.query.contains_key("fieldManager"),
        "a merge patch, not an apply"
    );
    let status = &seen.body["status"];
    assert_condition(status, "Degraded", "True", "InvalidResource");
    assert!(
        condition(status, "Degraded")["message"]
            .as_str()
            .unwrap()
            .contains("sometimes")
    );
    let event = server
        .expect(Method::POST, EVENTS, |seen| (201, seen.body.clone()))
        .await;
    assert_eq!(event.body["reason"], "InvalidResource");
    server.expect_silence().await;
    assert_eq!(finish(task).await.unwrap(), Action::await_change());
}

/// The controller watches its own resource, Secrets (metadata), and exactly the kinds in the
/// list of child kinds, each by the managed-by label; every watch is allowed by rbac.rs.
#[tokio::test]
async fn the_controller_watches_every_child_kind_and_nothing_else() {
    let (client, mut server) = api_server::client();
    let ctx = Arc::new(Context::new(client, Arc::new(Metrics::default()), None));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let run = tokio::spawn(controller::run(
        ctx,
        controller::Scope::Namespace("payments".into()),
        async move {
            let _ = stopped.await;
        },
    ));
    let requests = server.serve_watches(Duration::from_secs(2)).await;
    let resource = |path: &str| path.rsplit('/').next().unwrap().to_owned();
    let watched: BTreeSet<String> = requests
        .iter()
        .filter(|seen| seen.is_watch())
        .map(|seen| resource(&seen.path))
        .collect();
    let children: BTreeSet<String> = Children::kinds()
        .into_iter()
        .map(|kind| kind.plural)
        .collect();
    let expected: BTreeSet<String> = children
        .iter()
        .cloned()
        .chain(["paymentsystems".into(), "secrets".into(), "pods".into()])
        .collect();
    assert_eq!(watched, expected);
    let selects_children = |seen: &&api_server::Seen| {
        seen.query
            .get("labelSelector")
            .is_some_and(|selector| selector.contains("managed-by%3Dpaysys-operator"))
    };
    // ConfigMaps and Secrets twice: the children by label (the rules and the model
    // copies), and every one's metadata, for the ones holding a risk model (and the Secrets
    // the system references).
    for kind in ["configmaps", "secrets"] {
        let watches: BTreeSet<bool> = requests
            .iter()
            .filter(|seen| seen.is_watch() && resource(&seen.path) == kind)
            .map(|seen| selects_children(&seen))
            .collect();
        assert_eq!(watches, BTreeSet::from([true, false]), "{kind}");
    }
    for seen in &requests {
        assert!(
            seen.path.starts_with("/api/v1/namespaces/payments/")
                || seen.path.starts_with("/apis/") && seen.path.contains("/namespaces/payments/"),
            "watches only its namespace: {}",
            seen.path
        );
        let kind = resource(&seen.path);
        if (children.contains(&kind) && kind != "configmaps" && kind != "secrets") || kind == "pods"
        {
            assert!(selects_children(&seen), "{}: {:?}", seen.path, seen.query);
        }
    }
    let _ = stop.send(());
    run.abort();
}
