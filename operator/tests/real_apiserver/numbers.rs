//! Issue 9's root bug: on a real API server every `PaymentSystem` ended `InvalidResource`
//! ("invalid type: map, expected f64") because the server writes schema defaults (numbers)
//! into the stored object and serde_json's `arbitrary_precision` broke kube's
//! `DeserializeGuard` on them. A mocked API server never defaults, so only these tests see it.

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use kube::Api;
use kube::api::{ApiResource, DynamicObject};
use paysys_operator::crd::PaymentSystem;

use crate::support::{Operator, apply_system, env, wait_condition};

const TIMEOUT: Duration = Duration::from_secs(30);

/// The env var `name` of container 0 of Deployment `deployment`.
async fn env_var(client: &kube::Client, namespace: &str, deployment: &str, name: &str) -> String {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let deployment = deployments.get(deployment).await.expect("the Deployment");
    let container = &deployment.spec.template.spec.as_ref().unwrap().containers[0];
    container
        .env
        .iter()
        .flatten()
        .find(|var| var.name == name)
        .and_then(|var| var.value.clone())
        .unwrap_or_else(|| {
            panic!(
                "{deployment:?} has no env {name}",
                deployment = container.name
            )
        })
}

#[tokio::test]
async fn every_numeric_field_left_to_its_default_parses_and_reconciles() {
    let Some(env) = env("numbers-default").await else {
        return;
    };
    let _operator = Operator::start(env.client.clone(), &env.namespace);
    apply_system(
        &env,
        "apiVersion: paysys.io/v1alpha1\nkind: PaymentSystem\nmetadata: {name: shop}\nspec: {}",
    )
    .await;

    // The server did fill in the numeric defaults: this is the path that used to break.
    let raw: Api<DynamicObject> = Api::namespaced_with(
        env.client.clone(),
        &env.namespace,
        &ApiResource::erase::<PaymentSystem>(&()),
    );
    let stored = raw.get("shop").await.unwrap();
    let spec = &stored.data["spec"];
    assert_eq!(spec["riskEngine"]["approvalProbability"], 0.7, "{spec}");
    assert_eq!(spec["paymentsApi"]["replicas"], 2, "{spec}");
    assert_eq!(spec["riskEngine"]["rules"]["scores"]["velocityCount"], 60);

    let ps = wait_condition(&env, "shop", "Degraded", "False", TIMEOUT).await;
    assert_ne!(
        crate::support::condition(&ps, "Ready").unwrap().reason,
        "InvalidResource"
    );
    for name in [
        "shop-payments-api",
        "shop-risk-engine",
        "shop-rabbitmq",
        "shop-postgresql",
    ] {
        Api::<Deployment>::namespaced(env.client.clone(), &env.namespace)
            .get(name)
            .await
            .unwrap_or_else(|e| panic!("Deployment {name}: {e}"));
    }
    let probability = env_var(
        &env.client,
        &env.namespace,
        "shop-risk-engine",
        "RISK_APPROVAL_PROBABILITY",
    )
    .await;
    assert_eq!(probability.parse::<f64>().unwrap(), 0.7);
}

#[tokio::test]
async fn every_numeric_field_set_explicitly_parses_and_reconciles() {
    let Some(env) = env("numbers-explicit").await else {
        return;
    };
    let _operator = Operator::start(env.client.clone(), &env.namespace);
    apply_system(
        &env,
        r#"
apiVersion: paysys.io/v1alpha1
kind: PaymentSystem
metadata: {name: shop}
spec:
  paymentsApi:
    replicas: 3
    dbMaxConnections: 7
    service: {port: 8443}
  riskEngine:
    replicas: 2
    mode: random
    approvalProbability: 0.35
    prefetch: 50
    rules:
      declineThreshold: 90
      velocity: {windowSeconds: 600, maxCount: 5}
      scores:
        currencyNotAllowed: 91
        amountAboveMax: 92
        blockedUser: 93
        blockedPayee: 94
        blockedPaymentMethod: 95
        velocityCount: 41
        velocityTotal: 42
        payerIsPayee: 96
"#,
    )
    .await;
    wait_condition(&env, "shop", "Degraded", "False", TIMEOUT).await;
    let deployments: Api<Deployment> = Api::namespaced(env.client.clone(), &env.namespace);
    let api = deployments.get("shop-payments-api").await.unwrap();
    assert_eq!(api.spec.replicas, Some(3));
    let risk = deployments.get("shop-risk-engine").await.unwrap();
    assert_eq!(risk.spec.replicas, Some(2));
    let get = |name| env_var(&env.client, &env.namespace, "shop-risk-engine", name);
    assert_eq!(get("RISK_APPROVAL_PROBABILITY").await, "0.35");
    assert_eq!(get("RISK_PREFETCH").await, "50");
}
