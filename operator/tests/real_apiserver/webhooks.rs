//! `spec.webhooks` on a real API server: the secrets key generated once and never replaced
//! (not by a second reconcile, not by a restarted operator, not by switching webhooks off and
//! on), the API's environment taking it from the Secret, the NetworkPolicy egress as the
//! server stores it (and gone when webhooks are off), the status and printer column; a
//! user-named Secret used as it is, and a missing or unusable one reported as `Degraded`.

use std::time::Duration;

use base64::Engine as _;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Container, Secret};
use k8s_openapi::api::networking::v1::{NetworkPolicy, NetworkPolicySpec};
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use paysys_operator::crd::{PaymentSystem, WebhooksStatus};
use serde_json::json;

use crate::reconcile::printer_columns;
use crate::support::{Env, Operator, apply_system, condition, env, eventually, wait_condition};

const TIMEOUT: Duration = Duration::from_secs(30);

const ENABLED: &str = "
apiVersion: paysys.io/v1alpha1
kind: PaymentSystem
metadata:
  name: shop
spec:
  webhooks:
    enabled: true
    allowedCIDRs: [10.20.0.0/16]
";

fn key_of(secret: &Secret) -> Vec<u8> {
    secret.data.as_ref().unwrap()["secrets-key"].0.clone()
}

async fn api_container(env: &Env) -> Container {
    let deployments: Api<Deployment> = Api::namespaced(env.client.clone(), &env.namespace);
    let deployment = deployments.get("shop-payments-api").await.unwrap();
    deployment.spec.template.spec.unwrap().containers[0].clone()
}

fn value(container: &Container, name: &str) -> Option<String> {
    container
        .env
        .iter()
        .flatten()
        .find(|e| e.name == name)
        .and_then(|e| e.value.clone())
}

/// The Secret and key `WEBHOOK_SECRETS_KEY` comes from (it never has a value of its own).
fn key_reference(container: &Container) -> Option<(String, String)> {
    let variable = container
        .env
        .iter()
        .flatten()
        .find(|e| e.name == "WEBHOOK_SECRETS_KEY")?;
    assert_eq!(variable.value, None, "never a literal key");
    let selector = variable.value_from.as_ref()?.secret_key_ref.as_ref()?;
    Some((selector.name.clone(), selector.key.clone()))
}

async fn api_policy(env: &Env) -> NetworkPolicySpec {
    let policies: Api<NetworkPolicy> = Api::namespaced(env.client.clone(), &env.namespace);
    policies
        .get("shop-payments-api")
        .await
        .unwrap()
        .spec
        .unwrap()
}

async fn set_webhooks(env: &Env, webhooks: serde_json::Value) {
    let api: Api<PaymentSystem> = Api::namespaced(env.client.clone(), &env.namespace);
    api.patch(
        "shop",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"webhooks": webhooks}})),
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn webhook_egress_and_key_appear_once_and_the_key_outlives_switching_off() {
    let Some(env) = env("webhooks").await else {
        return;
    };
    let operator = Operator::start(env.client.clone(), &env.namespace);
    apply_system(&env, ENABLED).await;
    let ps = wait_condition(&env, "shop", "Degraded", "False", TIMEOUT).await;
    assert_eq!(
        ps.status.as_ref().unwrap().webhooks,
        Some(WebhooksStatus {
            enabled: true,
            secrets_key_secret: Some("shop-webhooks-key/secrets-key".into()),
        })
    );
    assert_eq!(
        printer_columns(&env, "shop").await["Webhooks"],
        json!(true),
        "kubectl get ps -o wide"
    );

    // The generated key: 32 bytes of standard base64, owned by the system.
    let secrets: Api<Secret> = Api::namespaced(env.client.clone(), &env.namespace);
    let generated = secrets.get("shop-webhooks-key").await.unwrap();
    let key = key_of(&generated);
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(&key)
        .unwrap();
    assert_eq!(bytes.len(), 32);
    assert_eq!(generated.owner_references()[0].uid, ps.uid().unwrap());

    // The API's environment, by reference to that Secret.
    let container = api_container(&env).await;
    assert_eq!(
        key_reference(&container),
        Some(("shop-webhooks-key".into(), "secrets-key".into()))
    );
    assert_eq!(
        value(&container, "WEBHOOKS_ENABLED").as_deref(),
        Some("true")
    );
    assert_eq!(
        value(&container, "WEBHOOK_ALLOWED_CIDRS").as_deref(),
        Some("10.20.0.0/16")
    );
    assert_eq!(value(&container, "WEBHOOK_ALLOW_HTTP"), None);

    // The NetworkPolicy as the API server stored it (its validation accepted the blocks).
    let policy = api_policy(&env).await;
    assert_eq!(
        policy.policy_types,
        Some(vec!["Ingress".to_string(), "Egress".to_string()])
    );
    let blocks: Vec<_> = policy
        .egress
        .iter()
        .flatten()
        .flat_map(|rule| rule.to.iter().flatten())
        .filter_map(|peer| peer.ip_block.clone())
        .collect();
    let v4 = blocks.iter().find(|b| b.cidr == "0.0.0.0/0").unwrap();
    assert!(
        v4.except
            .as_ref()
            .unwrap()
            .contains(&"169.254.0.0/16".to_string())
    );
    let v6 = blocks.iter().find(|b| b.cidr == "::/0").unwrap();
    assert!(
        v6.except
            .as_ref()
            .unwrap()
            .contains(&"fc00::/7".to_string())
    );
    assert!(blocks.iter().any(|b| b.cidr == "10.20.0.0/16"));

    // A restarted operator reconciling again never replaces the key.
    operator.stop().await;
    let restarted = Operator::start(env.client.clone(), &env.namespace);
    eventually("the restarted operator to reconcile", TIMEOUT, || async {
        (restarted.metrics.reconciliations.get() >= 1).then_some(())
    })
    .await;
    let again = secrets.get("shop-webhooks-key").await.unwrap();
    assert_eq!(again.resource_version(), generated.resource_version());

    // A setting changes: the pods roll (a new template), same key.
    let deployments: Api<Deployment> = Api::namespaced(env.client.clone(), &env.namespace);
    let before = deployments.get("shop-payments-api").await.unwrap();
    set_webhooks(&env, json!({"timeoutSeconds": 5})).await;
    wait_condition(&env, "shop", "Degraded", "False", TIMEOUT).await;
    let after = deployments.get("shop-payments-api").await.unwrap();
    assert!(after.metadata.generation > before.metadata.generation);
    assert_eq!(
        value(&api_container(&env).await, "WEBHOOK_TIMEOUT_MS").as_deref(),
        Some("5000")
    );

    // Switched off: no egress rule, no webhook environment; the key stays.
    set_webhooks(&env, json!({"enabled": false})).await;
    let ps = wait_condition(&env, "shop", "Degraded", "False", TIMEOUT).await;
    assert_eq!(
        ps.status.unwrap().webhooks,
        Some(WebhooksStatus {
            enabled: false,
            secrets_key_secret: None
        })
    );
    let policy = api_policy(&env).await;
    assert_eq!(policy.policy_types, Some(vec!["Ingress".to_string()]));
    assert_eq!(policy.egress, None);
    let container = api_container(&env).await;
    let left: Vec<&String> = container
        .env
        .iter()
        .flatten()
        .map(|e| &e.name)
        .filter(|name| name.starts_with("WEBHOOK"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    let kept = secrets.get("shop-webhooks-key").await.unwrap();
    assert_eq!(kept.uid(), generated.uid());
    assert!(kept.metadata.deletion_timestamp.is_none());

    // On again: the very same key (the stored signing secrets stay readable).
    set_webhooks(&env, json!({"enabled": true})).await;
    wait_condition(&env, "shop", "Degraded", "False", TIMEOUT).await;
    let again = secrets.get("shop-webhooks-key").await.unwrap();
    assert_eq!(again.uid(), generated.uid());
    assert_eq!(key_of(&again), key);
    assert_eq!(
        api_policy(&env).await.egress.map(|e| e.is_empty()),
        Some(false)
    );
}

#[tokio::test]
async fn a_user_named_key_secret_is_used_as_it_is_and_a_missing_one_is_degraded() {
    let Some(env) = env("webhooks-user-key").await else {
        return;
    };
    let _operator = Operator::start(env.client.clone(), &env.namespace);
    apply_system(
        &env,
        "
apiVersion: paysys.io/v1alpha1
kind: PaymentSystem
metadata:
  name: shop
spec:
  webhooks:
    enabled: true
    secretsKeySecret: {secretName: vault-webhooks}
",
    )
    .await;
    let ps = wait_condition(&env, "shop", "Degraded", "True", TIMEOUT).await;
    let degraded = condition(&ps, "Degraded").unwrap();
    assert_eq!(degraded.reason, "SecretNotFound");
    assert!(
        degraded.message.contains("vault-webhooks"),
        "{}",
        degraded.message
    );
    let secrets: Api<Secret> = Api::namespaced(env.client.clone(), &env.namespace);
    assert!(
        secrets
            .get_opt("shop-webhooks-key")
            .await
            .unwrap()
            .is_none(),
        "nothing generated"
    );

    // Not a key the API could use: reported, its value never shown.
    let user = |value: &str| -> Secret {
        serde_json::from_value(json!({
            "metadata": {"name": "vault-webhooks"},
            "stringData": {"secrets-key": value},
        }))
        .unwrap()
    };
    secrets
        .create(&PostParams::default(), &user("hunter2"))
        .await
        .unwrap();
    let ps = eventually("SecretKeyInvalid", TIMEOUT, || async {
        let ps = Api::<PaymentSystem>::namespaced(env.client.clone(), &env.namespace)
            .get("shop")
            .await
            .ok()?;
        let degraded = condition(&ps, "Degraded")?;
        (degraded.reason == "SecretKeyInvalid").then_some(ps.clone())
    })
    .await;
    let message = &condition(&ps, "Degraded").unwrap().message;
    assert!(message.contains("32 bytes"), "{message}");
    assert!(!message.contains("hunter2"), "{message}");

    // A good key: used as it is, by reference, never written by the operator.
    let key = base64::engine::general_purpose::STANDARD.encode([5u8; 32]);
    secrets
        .replace("vault-webhooks", &PostParams::default(), &user(&key))
        .await
        .unwrap();
    let written = secrets.get("vault-webhooks").await.unwrap();
    let ps = wait_condition(&env, "shop", "Degraded", "False", TIMEOUT).await;
    assert_eq!(
        ps.status
            .unwrap()
            .webhooks
            .unwrap()
            .secrets_key_secret
            .as_deref(),
        Some("vault-webhooks/secrets-key")
    );
    assert_eq!(
        key_reference(&api_container(&env).await),
        Some(("vault-webhooks".into(), "secrets-key".into()))
    );
    let after = secrets.get("vault-webhooks").await.unwrap();
    assert_eq!(after.resource_version(), written.resource_version());
    assert!(after.owner_references().is_empty(), "the user's, not owned");
    assert!(
        secrets
            .get_opt("shop-webhooks-key")
            .await
            .unwrap()
            .is_none()
    );
}

/// The contract with the real `payments-api` binary (as in `contract.rs`: the pod template's
/// environment, resolved from the Secrets, only `PORT` replaced): it starts with the key the
/// operator generated, and registers endpoints as the spec's settings say: a public address
/// yes, a private one only inside `allowedCIDRs`, plain http never.
#[tokio::test]
async fn the_api_runs_with_the_webhook_settings_the_operator_wires() {
    use crate::contract::{VirtualHost, binary, container, skip, start};
    use crate::reconcile::create_secret;
    use crate::support::http;
    use paysys_testkit::{TestDb, free_port, unique_name};

    let Some(env) = env("webhooks-contract").await else {
        return;
    };
    if let Err(why) = binary("payments-api") {
        return skip(&why);
    }
    let vhost = match VirtualHost::create() {
        Ok(vhost) => vhost,
        Err(why) => return skip(&why),
    };
    let db = TestDb::create().await;
    let amqp = format!("amqp://guest:guest@127.0.0.1:5672/{}", vhost.name);
    create_secret(&env, "shop-db", &[("url", &db.url)]).await;
    create_secret(&env, "shop-broker", &[("url", &amqp)]).await;
    let _operator = Operator::start(env.client.clone(), &env.namespace);
    apply_system(
        &env,
        "apiVersion: paysys.io/v1alpha1\nkind: PaymentSystem\nmetadata: {name: shop}\nspec:\n  \
         database:\n    external: {secretName: shop-db}\n  rabbitmq:\n    external: {secretName: shop-broker}\n  \
         webhooks: {enabled: true, allowedCIDRs: [10.20.0.0/16], timeoutSeconds: 3}",
    )
    .await;
    let ps = wait_condition(&env, "shop", "Degraded", "False", TIMEOUT).await;

    let dir = std::env::temp_dir().join(unique_name("paysys-webhooks-contract"));
    std::fs::create_dir_all(&dir).unwrap();
    let api = container(&env, "shop-payments-api", &dir).await;
    let secrets: Api<Secret> = Api::namespaced(env.client.clone(), &env.namespace);
    let generated = key_of(&secrets.get("shop-webhooks-key").await.unwrap());
    assert_eq!(
        api.env.get("WEBHOOK_SECRETS_KEY").map(String::as_bytes),
        Some(generated.as_slice()),
        "the pod reads the generated key"
    );
    let port = free_port();
    let log = dir.join("payments-api.log");
    let _api = start(&api, port, &log);
    let ready = paysys_testkit::eventually(TIMEOUT, || async {
        let (status, _) = http(port, "GET", "/readyz", &[], "").await?;
        (status == 200).then_some(())
    })
    .await;
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        ready.is_some(),
        "the API never became ready\n{}",
        log_text()
    );

    let key_secret = ps.status.unwrap().api_key_secret.expect("a generated key");
    let secret = secrets.get(&key_secret).await.unwrap();
    let key = String::from_utf8(secret.data.unwrap()["api-key"].0.clone()).unwrap();
    let register = |url: &'static str| {
        let key = key.clone();
        async move {
            let body = format!(r#"{{"url": "{url}", "eventTypes": ["payment.approved"]}}"#);
            http(
                port,
                "POST",
                "/v1/webhook-endpoints",
                &[
                    ("Content-Type", "application/json"),
                    ("Authorization", &key),
                ],
                &body,
            )
            .await
            .expect("an answer")
        }
    };
    for (url, expected) in [
        ("https://93.184.216.34/hook", 201),
        ("https://10.20.0.5/hook", 201),
        ("https://10.30.0.5/hook", 400),
        ("https://169.254.169.254/latest/meta-data", 400),
        ("http://93.184.216.34/hook", 400),
    ] {
        let (status, answer) = register(url).await;
        assert_eq!(status, expected, "{url}: {answer}\n{}", log_text());
        if status == 201 {
            let endpoint: serde_json::Value = serde_json::from_str(&answer).unwrap();
            assert!(
                endpoint["secret"].as_str().unwrap().starts_with("whsec_"),
                "{answer}"
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
