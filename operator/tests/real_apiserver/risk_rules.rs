//! A rule set the risk engine would refuse is refused by the operator first: the resource is
//! Degraded with the engine's own message, and the risk engine keeps running its last good
//! rules instead of rolling into a crash loop.

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::api::{Patch, PatchParams};
use paysys_operator::crd::PaymentSystem;
use serde_json::json;

use crate::support::{Env, Operator, apply_system, condition, env, wait_condition};

const TIMEOUT: Duration = Duration::from_secs(30);
const MINIMAL: &str = include_str!("../../../examples/paymentsystem-minimal.yaml");

/// The risk engine's pod template annotation that rolls it when its rules change, and the
/// rules ConfigMap's text.
async fn risk_engine_rules(env: &Env) -> (String, String) {
    let deployment = Api::<Deployment>::namespaced(env.client.clone(), &env.namespace)
        .get("shop-risk-engine")
        .await
        .unwrap();
    let hash = deployment
        .spec
        .template
        .metadata
        .unwrap()
        .annotations
        .unwrap()["paysys.io/config-hash"]
        .clone();
    let rules = Api::<ConfigMap>::namespaced(env.client.clone(), &env.namespace)
        .get("shop-risk-rules")
        .await
        .unwrap();
    (hash, rules.data.unwrap().into_values().collect())
}

async fn set_rules(env: &Env, rules: serde_json::Value) {
    Api::<PaymentSystem>::namespaced(env.client.clone(), &env.namespace)
        .patch(
            "shop",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"riskEngine": {"rules": rules}}})),
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn rules_the_engine_refuses_are_a_degraded_reason_and_never_reach_the_engine() {
    let Some(env) = env("risk-rules").await else {
        return;
    };
    let _operator = Operator::start(env.client.clone(), &env.namespace);
    apply_system(&env, MINIMAL).await;
    set_rules(
        &env,
        json!({"version": "good", "maxAmount": {"USD": "10000.50"}}),
    )
    .await;
    wait_condition(&env, "shop", "Degraded", "False", TIMEOUT).await;
    let good = risk_engine_rules(&env).await;
    assert!(good.1.contains("10000.50"), "{}", good.1);

    // The API server's schema accepts it (any string is an amount there); the engine's
    // compile does not: USD has two decimal places.
    set_rules(
        &env,
        json!({"version": "bad", "maxAmount": {"USD": "12.345"}}),
    )
    .await;
    let ps = wait_condition(&env, "shop", "Degraded", "True", TIMEOUT).await;
    let degraded = condition(&ps, "Degraded").unwrap();
    assert_eq!(degraded.reason, "InvalidRiskRules");
    assert!(
        degraded.message.contains(
            r#"riskEngine.rules.maxAmount.USD: "12.345" has more decimals than USD allows (2)"#
        ),
        "{}",
        degraded.message
    );
    // The status is written after the refusal, so every reconcile of the bad spec has ended
    // before here: none of them touched the engine's Deployment or its rules.
    assert_eq!(risk_engine_rules(&env).await, good);

    // Another refused value, another message: the condition follows the spec.
    set_rules(
        &env,
        json!({"version": "bad", "allowedCurrencies": ["USD", "XAU"]}),
    )
    .await;
    let ps = wait_condition(&env, "shop", "Degraded", "True", TIMEOUT).await;
    let degraded = condition(&ps, "Degraded").unwrap();
    assert_eq!(degraded.reason, "InvalidRiskRules");
    assert!(
        degraded
            .message
            .contains("riskEngine.rules.allowedCurrencies[1]: 'XAU'"),
        "{}",
        degraded.message
    );
    assert_eq!(risk_engine_rules(&env).await, good);

    // Fixed: the engine rolls to the new rules.
    set_rules(
        &env,
        json!({"version": "fixed", "maxAmount": {"USD": "12.34"}, "allowedCurrencies": null}),
    )
    .await;
    wait_condition(&env, "shop", "Degraded", "False", TIMEOUT).await;
    let fixed = risk_engine_rules(&env).await;
    assert_ne!(fixed.0, good.0, "the engine rolls to the fixed rules");
    assert!(
        fixed.1.contains("12.34") && !fixed.1.contains("12.345"),
        "{}",
        fixed.1
    );
}
