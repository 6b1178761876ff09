//! Reconcile tests against a scripted API server: every request the operator makes, in order,
//! with its method, path, field manager and body.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::api_server::{self, ApiServer, not_found, server_error};
use common::system;
use http::Method;
use kube::core::error_boundary::{DeserializeGuard, InvalidObject};
use kube::runtime::controller::Action;
use paysys_operator::controller::{self, Context, Error};
use paysys_operator::crd::PaymentSystem;
use paysys_operator::metrics::Metrics;
use serde_json::{Value, json};
use tokio::task::JoinHandle;

const CORE: &str = "/api/v1/namespaces/payments";
const APPS: &str = "/apis/apps/v1/namespaces/payments/deployments";
const NETPOL: &str = "/apis/networking.k8s.io/v1/namespaces/payments/networkpolicies";
const PDB: &str = "/apis/policy/v1/namespaces/payments/poddisruptionbudgets";
const STATUS: &str = "/apis/paysys.io/v1alpha1/namespaces/payments/paymentsystems/shop/status";
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

fn deployment_status(ready: bool) -> impl Fn(&Value) -> Value {
    move |body| {
        let desired = body["spec"]["replicas"].as_i64().unwrap();
        json!({
            "observedGeneration": 1,
            "replicas": desired,
            "updatedReplicas": desired,
            "readyReplicas": if ready { desired } else { 0 },
        })
    }
}

/// The children of `spec: {}` applied in order, Deployments answered ready or not.
async fn expect_default_children(server: &mut ApiServer, ready: bool) -> Vec<Value> {
    let mut bodies = Vec::new();
    bodies.push(
        server
            .expect_apply(&format!("{CORE}/configmaps/shop-risk-rules"), None)
            .await
            .body,
    );
    for name in [
        "shop-rabbitmq",
        "shop-postgresql",
        "shop-payments-api",
        "shop-risk-engine",
    ] {
        bodies.push(
            server
                .expect_apply(&format!("{NETPOL}/{name}"), None)
                .await
                .body,
        );
    }
    for name in ["shop-rabbitmq", "shop-postgresql", "shop-payments-api"] {
        bodies.push(
            server
                .expect_apply(&format!("{CORE}/services/{name}"), None)
                .await
                .body,
        );
    }
    let status = deployment_status(ready);
    for name in [
        "shop-rabbitmq",
        "shop-postgresql",
        "shop-payments-api",
        "shop-risk-engine",
    ] {
        let path = format!("{APPS}/{name}");
        let seen = server
            .expect(Method::PATCH, &path, |seen| {
                assert_eq!(
                    seen.query.get("fieldManager").map(String::as_str),
                    Some("paysys-operator")
                );
                assert_eq!(seen.query.get("force").map(String::as_str), Some("true"));
                let mut object = seen.body.clone();
                object["metadata"]["generation"] = json!(1);
                object["status"] = status(&seen.body);
                (200, object)
            })
            .await;
        bodies.push(seen.body);
    }
    bodies.push(
        server
            .expect_apply(&format!("{PDB}/shop-payments-api"), None)
            .await
            .body,
    );
    bodies
}

/// Children `spec: {}` never has, deleted by name (already absent here).
async fn expect_default_prune(server: &mut ApiServer) {
    server
        .expect_delete(&format!("{PDB}/shop-risk-engine"), false)
        .await;
    server
        .expect_delete(
            &format!("{CORE}/persistentvolumeclaims/shop-rabbitmq-data"),
            false,
        )
        .await;
    server
        .expect_delete(
            &format!("{CORE}/persistentvolumeclaims/shop-postgresql-data"),
            false,
        )
        .await;
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

#[tokio::test]
async fn fresh_create_applies_every_child_and_reports_progressing() {
    let (mut server, ctx, task) = start(system(""));
    let created = expect_generated_secrets(&mut server, false).await;
    assert!(created[0]["data"]["api-key"].is_string());
    assert!(created[0]["data"]["api-keys"].is_string());
    let bodies = expect_default_children(&mut server, false).await;
    let api = bodies
        .iter()
        .find(|b| b["kind"] == "Deployment" && b["metadata"]["name"] == "shop-payments-api")
        .unwrap();
    assert_eq!(api["apiVersion"], "apps/v1");
    assert!(
        api["spec"]["template"]["metadata"]["annotations"]["paysys.io/config-hash"].is_string()
    );
    expect_default_prune(&mut server).await;
    let status = expect_status(&mut server).await;
    assert_eq!(status["observedGeneration"], 1);
    assert_condition(&status, "Ready", "False", "ComponentsNotReady");
    assert_condition(&status, "Progressing", "True", "RollingOut");
    assert_condition(&status, "Degraded", "False", "ReconcileSucceeded");
    assert_eq!(
        status["paymentsApi"],
        json!({"desiredReplicas": 2, "readyReplicas": 0})
    );
    assert_eq!(
        status["riskEngine"],
        json!({"desiredReplicas": 1, "readyReplicas": 0})
    );
    assert_eq!(status["apiUrl"], "http://shop-payments-api.payments.svc");
    assert_eq!(status["apiKeySecret"], "shop-api-key");
    server.expect_silence().await;
    finish(task).await.unwrap();
    assert_eq!(ctx.metrics.reconciliations.get(), 1);
}

#[tokio::test]
async fn all_ready_reports_ready_and_existing_secrets_are_left_untouched() {
    let (mut server, _ctx, task) = start(system(""));
    // Each GET finds the Secret: no POST, no PATCH, the next request is the ConfigMap.
    expect_generated_secrets(&mut server, true).await;
    expect_default_children(&mut server, true).await;
    expect_default_prune(&mut server).await;
    let status = expect_status(&mut server).await;
    assert_condition(&status, "Ready", "True", "AllComponentsReady");
    assert_condition(&status, "Progressing", "False", "RolloutComplete");
    assert_condition(&status, "Degraded", "False", "ReconcileSucceeded");
    assert_eq!(
        status["paymentsApi"],
        json!({"desiredReplicas": 2, "readyReplicas": 2})
    );
    server.expect_silence().await;
    finish(task).await.unwrap();
}

#[tokio::test]
async fn spec_change_to_external_dependencies_removes_the_managed_servers() {
    let mut ps = system(
        "paymentsApi: {replicas: 1}\nrabbitmq:\n  external: {secretName: broker}\ndatabase:\n  external: {secretName: db}\nnetworkPolicy: {enabled: false}",
    );
    ps.metadata.generation = Some(2);
    let (mut server, _ctx, task) = start(ps);
    server
        .expect(Method::GET, &format!("{CORE}/secrets/shop-api-key"), |_| {
            (200, existing_secret("shop-api-key"))
        })
        .await;
    for (name, url) in [
        ("broker", "YW1xcHM6Ly9tcS5leGFtcGxl"),
        ("db", "cG9zdGdyZXM6Ly9kYi5leGFtcGxl"),
    ] {
        server
            .expect(Method::GET, &format!("{CORE}/secrets/{name}"), |_| {
                (200, json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "data": {"url": url}}))
            })
            .await;
    }
    server
        .expect_apply(&format!("{CORE}/configmaps/shop-risk-rules"), None)
        .await;
    server
        .expect_apply(&format!("{CORE}/services/shop-payments-api"), None)
        .await;
    let api = server
        .expect_apply(&format!("{APPS}/shop-payments-api"), Some(json!({})))
        .await;
    let env = api.body["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .unwrap()
        .clone();
    let from = |name: &str| {
        env.iter().find(|e| e["name"] == name).unwrap()["valueFrom"]["secretKeyRef"].clone()
    };
    assert_eq!(
        from("AMQP_URL"),
        json!({"name": "broker", "key": "url", "optional": false})
    );
    assert_eq!(
        from("DATABASE_URL"),
        json!({"name": "db", "key": "url", "optional": false})
    );
    server
        .expect_apply(&format!("{APPS}/shop-risk-engine"), Some(json!({})))
        .await;
    // The managed servers, the API's budget (1 replica) and the policies go; workloads first.
    server
        .expect_delete(&format!("{APPS}/shop-rabbitmq"), true)
        .await;
    server
        .expect_delete(&format!("{APPS}/shop-postgresql"), true)
        .await;
    server
        .expect_delete(&format!("{PDB}/shop-payments-api"), true)
        .await;
    server
        .expect_delete(&format!("{PDB}/shop-risk-engine"), false)
        .await;
    server
        .expect_delete(&format!("{CORE}/services/shop-rabbitmq"), true)
        .await;
    server
        .expect_delete(&format!("{CORE}/services/shop-postgresql"), true)
        .await;
    for name in [
        "shop-rabbitmq",
        "shop-postgresql",
        "shop-payments-api",
        "shop-risk-engine",
    ] {
        server
            .expect_delete(&format!("{NETPOL}/{name}"), true)
            .await;
    }
    server
        .expect_delete(
            &format!("{CORE}/persistentvolumeclaims/shop-rabbitmq-data"),
            false,
        )
        .await;
    server
        .expect_delete(
            &format!("{CORE}/persistentvolumeclaims/shop-postgresql-data"),
            false,
        )
        .await;
    server
        .expect_delete(&format!("{CORE}/secrets/shop-rabbitmq-credentials"), true)
        .await;
    server
        .expect_delete(&format!("{CORE}/secrets/shop-postgresql-credentials"), true)
        .await;
    let status = expect_status(&mut server).await;
    assert_eq!(status["observedGeneration"], 2);
    assert_condition(&status, "Ready", "False", "ComponentsNotReady");
    assert!(
        status.get("rabbitmq").is_none() && status.get("database").is_none(),
        "{status}"
    );
    server.expect_silence().await;
    finish(task).await.unwrap();
}

#[tokio::test]
async fn api_error_requeues_with_backoff_and_reports_degraded() {
    let (mut server, ctx, task) = start(system(""));
    expect_generated_secrets(&mut server, true).await;
    server
        .expect(
            Method::PATCH,
            &format!("{CORE}/configmaps/shop-risk-rules"),
            |_| server_error(),
        )
        .await;
    let status = expect_status(&mut server).await;
    assert_condition(&status, "Degraded", "True", "ApiError");
    assert_condition(&status, "Ready", "False", "ApiError");
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
    assert_eq!(event.body["reason"], "ApiError");
    assert_eq!(event.body["regarding"]["name"], "shop");
    assert_eq!(event.body["regarding"]["kind"], "PaymentSystem");
    server.expect_silence().await;
    let error = finish(task).await.unwrap_err();
    assert_eq!(error.reason(), "ApiError");
    // The error policy backs off exponentially per resource.
    let guard = Arc::new(DeserializeGuard(Ok(system(""))));
    let first = controller::error_policy(guard.clone(), &error, ctx.clone());
    let second = controller::error_policy(guard, &error, ctx.clone());
    assert_eq!(first, Action::requeue(Duration::from_secs(5)));
    assert_eq!(second, Action::requeue(Duration::from_secs(10)));
    let metrics = ctx.metrics.encode();
    assert!(
        metrics.contains("paysys_operator_reconcile_failures_total{reason=\"ApiError\"} 1"),
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
async fn unchanged_system_writes_no_status() {
    // First pass: everything ready; keep the status it writes.
    let (mut server, _ctx, task) = start(system(""));
    expect_generated_secrets(&mut server, true).await;
    expect_default_children(&mut server, true).await;
    expect_default_prune(&mut server).await;
    let status = expect_status(&mut server).await;
    finish(task).await.unwrap();
    // Second pass with that status: same applies, no status write.
    let mut ps = system("");
    ps.status = Some(serde_json::from_value(status).unwrap());
    let (mut server, _ctx, task) = start(ps);
    expect_generated_secrets(&mut server, true).await;
    expect_default_children(&mut server, true).await;
    expect_default_prune(&mut server).await;
    server.expect_silence().await;
    finish(task).await.unwrap();
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
