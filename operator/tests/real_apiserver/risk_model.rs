//! The risk model on a real API server: a good model in a ConfigMap or a Secret is copied
//! (into an owned immutable object of the same kind), mounted and rolled out, and reported
//! once every pod runs it (the test plays kubelet); a corrupt one, one of other features or a
//! missing one is refused with `Degraded` while every other change of the spec is applied and
//! the risk engine keeps its last good model (or, with none yet, is left as it was); a
//! challenger is reported; a model on a claim that the engine refuses (a new pod exiting 2)
//! makes the system `Degraded` with the engine's message while the old pod keeps serving.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Binding, ConfigMap, ObjectReference, Pod, Secret};
use k8s_openapi::api::events::v1::Event;
use kube::api::{ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use paysys_operator::crd::PaymentSystem;
use paysys_testkit::envtest::kubelet::{FakeKubelet, NODE, ensure_node};
use serde_json::json;

use crate::support::{
    Env, Operator, TEST_MANAGER, apply_system, condition, env, eventually, wait_condition,
};

const TIMEOUT: Duration = Duration::from_secs(30);
const CARD: &str =
    include_str!("../../../services/risk-engine/tests/fixtures/model/model-card.json");
const MODEL: &str = include_str!("../../../services/risk-engine/tests/fixtures/model/model.txt");

/// The fixture card's `model_version`.
fn version() -> String {
    let card: serde_json::Value = serde_json::from_str(CARD).unwrap();
    card["model_version"].as_str().unwrap().to_owned()
}

/// Creates or replaces ConfigMap `name` holding a model directory (as the user would with
/// `kubectl create configmap --from-file`).
async fn model_config_map(env: &Env, name: &str, card: &str, model: &str) {
    let config_map = json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name},
        "data": {"model-card.json": card, "model.txt": model},
    });
    Api::<ConfigMap>::namespaced(env.client.clone(), &env.namespace)
        .patch(
            name,
            &PatchParams::apply(TEST_MANAGER).force(),
            &Patch::Apply(config_map),
        )
        .await
        .unwrap_or_else(|e| panic!("apply ConfigMap {name}: {e}"));
}

/// Creates or replaces Secret `name` holding a model directory (as `kubectl create secret
/// generic --from-file` would), labelled so a test can tell it is left as the user made it.
async fn model_secret(env: &Env, name: &str, card: &str, model: &str) {
    use base64::Engine as _;
    let encode = |text: &str| base64::engine::general_purpose::STANDARD.encode(text);
    let secret = json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": name, "labels": {"owner": "data-science"}},
        "type": "Opaque",
        "data": {"model-card.json": encode(card), "model.txt": encode(model)},
    });
    Api::<Secret>::namespaced(env.client.clone(), &env.namespace)
        .patch(
            name,
            &PatchParams::apply(TEST_MANAGER).force(),
            &Patch::Apply(secret),
        )
        .await
        .unwrap_or_else(|e| panic!("apply Secret {name}: {e}"));
}

fn system(model: &str) -> String {
    system_with(model, "")
}

/// A system in model mode with `model`, and `more` (YAML lines under `spec`, indented by 2).
fn system_with(model: &str, more: &str) -> String {
    format!(
        "apiVersion: paysys.io/v1alpha1\nkind: PaymentSystem\nmetadata: {{name: shop}}\n\
         spec:\n{more}  riskEngine:\n    mode: model\n    model: {model}\n"
    )
}

/// The environment variable `name` of Deployment `deployment`'s first container.
async fn env_var(env: &Env, deployment: &str, name: &str) -> Option<String> {
    let deployment = Api::<Deployment>::namespaced(env.client.clone(), &env.namespace)
        .get(deployment)
        .await
        .unwrap();
    deployment.spec.template.spec?.containers[0]
        .env
        .clone()?
        .into_iter()
        .find(|e| e.name == name)?
        .value
}

/// The risk engine Deployment's pod template: annotations, volumes by name, env by name.
struct Template {
    annotations: BTreeMap<String, String>,
    config_map_volumes: BTreeMap<String, String>,
    secret_volumes: BTreeMap<String, String>,
    env: BTreeMap<String, String>,
}

/// Waits until the payments API's Deployment has `level` as its log level: the sign that a
/// change of the spec was applied beside a refused model.
async fn api_log_level_becomes(env: &Env, level: &str) {
    eventually("the API's new log level", TIMEOUT, || async {
        (env_var(env, "shop-payments-api", "RUST_LOG")
            .await
            .as_deref()
            == Some(level))
        .then_some(())
    })
    .await;
}

async fn template(env: &Env) -> Template {
    let deployment = Api::<Deployment>::namespaced(env.client.clone(), &env.namespace)
        .get("shop-risk-engine")
        .await
        .unwrap();
    let template = deployment.spec.template;
    let pod = template.spec.unwrap();
    let volumes = pod.volumes.unwrap_or_default();
    Template {
        annotations: template.metadata.unwrap().annotations.unwrap_or_default(),
        config_map_volumes: volumes
            .iter()
            .filter_map(|v| Some((v.name.clone(), v.config_map.as_ref()?.name.clone())))
            .collect(),
        secret_volumes: volumes
            .iter()
            .filter_map(|v| Some((v.name.clone(), v.secret.as_ref()?.secret_name.clone()?)))
            .collect(),
        env: pod.containers[0]
            .env
            .clone()
            .unwrap_or_default()
            .into_iter()
            .filter_map(|e| Some((e.name, e.value?)))
            .collect(),
    }
}

async fn model_status(env: &Env) -> (Option<String>, Option<String>) {
    let ps = Api::<PaymentSystem>::namespaced(env.client.clone(), &env.namespace)
        .get("shop")
        .await
        .unwrap();
    let model = ps.status.and_then(|s| s.risk_engine).and_then(|r| r.model);
    (
        model.as_ref().and_then(|m| m.serving.clone()),
        model.and_then(|m| m.shadow),
    )
}

/// The notes of the Events with `reason` in the test's namespace.
async fn events(env: &Env, reason: &str) -> Vec<String> {
    Api::<Event>::namespaced(env.client.clone(), &env.namespace)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|event| event.reason.as_deref() == Some(reason))
        .filter_map(|event| event.note)
        .collect()
}

#[tokio::test]
async fn a_config_map_model_is_checked_copied_rolled_out_and_a_broken_one_never_is() {
    let Some(env) = env("risk-model").await else {
        return;
    };
    let _operator = Operator::start(env.client.clone(), &env.namespace);
    let version = version();
    model_config_map(&env, "risk-model", CARD, MODEL).await;
    apply_system(&env, &system("{configMap: {name: risk-model}}")).await;
    wait_condition(&env, "shop", "Degraded", "False", TIMEOUT).await;

    // Mounted from the operator's immutable copy, the version on the pod template.
    let before = template(&env).await;
    assert_eq!(before.annotations["paysys.io/model-version"], version);
    let copy = before.config_map_volumes["model"].clone();
    assert!(copy.starts_with("shop-model-"), "{copy}");
    assert_eq!(before.env["MODEL_DIR"], "/etc/paysys/model");
    assert_eq!(before.env["RISK_MODE"], "model");
    assert!(!before.env.contains_key("MODEL_VERSION"));
    let config_maps: Api<ConfigMap> = Api::namespaced(env.client.clone(), &env.namespace);
    let copied = config_maps.get(&copy).await.unwrap();
    assert_eq!(copied.immutable, Some(true));
    let data = copied.data.unwrap();
    assert_eq!(data["model.txt"], MODEL);
    assert_eq!(data["model-card.json"], CARD);
    // Not reported before the pods run it.
    assert_eq!(model_status(&env).await, (None, None));

    let kubelet = FakeKubelet::start(env.client.clone(), &env.namespace)
        .await
        .unwrap();
    wait_condition(&env, "shop", "Ready", "True", TIMEOUT).await;
    assert_eq!(model_status(&env).await, (Some(version.clone()), None));
    let columns = printer_columns(&env).await;
    assert_eq!(columns["Model"], version.as_str(), "{columns:?}");
    let expected = format!("risk engine model {version} rolled out");
    eventually("a ModelRolledOut event", TIMEOUT, || async {
        events(&env, "ModelRolledOut")
            .await
            .contains(&expected)
            .then_some(())
    })
    .await;

    // A challenger (the same model here: one copy serves both).
    apply_system(
        &env,
        &system("{configMap: {name: risk-model}, shadow: {configMap: {name: risk-model}}}"),
    )
    .await;
    eventually("the shadow model reported", TIMEOUT, || async {
        (model_status(&env).await == (Some(version.clone()), Some(version.clone()))).then_some(())
    })
    .await;
    let with_shadow = template(&env).await;
    assert_eq!(with_shadow.config_map_volumes["shadow-model"], copy);
    assert_eq!(
        with_shadow.env["SHADOW_MODEL_DIR"],
        "/etc/paysys/shadow-model"
    );
    assert_eq!(
        with_shadow.annotations["paysys.io/shadow-model-version"],
        version
    );

    // The user's ConfigMap turns corrupt: refused, and the pods keep their model.
    let corrupt = MODEL.replacen("leaf_value=", "leaf_value=9", 1);
    model_config_map(&env, "risk-model", CARD, &corrupt).await;
    let ps = wait_condition(&env, "shop", "Degraded", "True", TIMEOUT).await;
    let degraded = condition(&ps, "Degraded").unwrap();
    assert_eq!(degraded.reason, "ModelInvalid");
    assert!(
        degraded
            .message
            .contains("ConfigMap risk-model key model.txt")
            && degraded.message.contains("sha256 is")
            && degraded.message.contains(&format!(
                "the risk engine serves model {version} with challenger {version}"
            )),
        "{}",
        degraded.message
    );
    // Still serving: ready, the refusal told as a Warning Event.
    assert_eq!(condition(&ps, "Ready").unwrap().status, "True");
    eventually("a ModelInvalid Warning Event", TIMEOUT, || async {
        (!events(&env, "ModelInvalid").await.is_empty()).then_some(())
    })
    .await;
    let kept = template(&env).await;
    assert_eq!(kept.annotations, with_shadow.annotations);
    assert_eq!(kept.config_map_volumes, with_shadow.config_map_volumes);
    assert!(config_maps.get_opt(&copy).await.unwrap().is_some());
    assert_eq!(
        model_status(&env).await,
        (Some(version.clone()), Some(version.clone()))
    );

    // Trained on other features: refused naming both versions.
    let other_features = CARD.replace("payment-features/1", "payment-features/0");
    model_config_map(&env, "risk-model", &other_features, MODEL).await;
    eventually("the feature mismatch reported", TIMEOUT, || async {
        let ps = Api::<PaymentSystem>::namespaced(env.client.clone(), &env.namespace)
            .get("shop")
            .await
            .ok()?;
        let message = condition(&ps, "Degraded")?.message.clone();
        message
            .contains(&format!(
                "model {version} was trained on features payment-features/0, this engine computes payment-features/1"
            ))
            .then_some(())
    })
    .await;
    assert_eq!(template(&env).await.annotations, with_shadow.annotations);

    // Repaired: reconciled again, the same copy.
    model_config_map(&env, "risk-model", CARD, MODEL).await;
    wait_condition(&env, "shop", "Degraded", "False", TIMEOUT).await;
    assert_eq!(template(&env).await.config_map_volumes["model"], copy);
    drop(kubelet);
}

#[tokio::test]
async fn a_missing_model_config_map_is_degraded_and_creates_no_risk_engine_but_the_rest() {
    let Some(env) = env("risk-model-missing").await else {
        return;
    };
    let _operator = Operator::start(env.client.clone(), &env.namespace);
    apply_system(&env, &system("{configMap: {name: nowhere}}")).await;
    let ps = wait_condition(&env, "shop", "Degraded", "True", TIMEOUT).await;
    let degraded = condition(&ps, "Degraded").unwrap();
    assert_eq!(degraded.reason, "ModelNotFound");
    assert!(
        degraded.message.contains("ConfigMap nowhere")
            && degraded.message.contains("no risk engine is created"),
        "{}",
        degraded.message
    );
    assert_eq!(condition(&ps, "Ready").unwrap().reason, "ModelNotFound");
    let deployments: Api<Deployment> = Api::namespaced(env.client.clone(), &env.namespace);
    assert!(
        deployments
            .get_opt("shop-risk-engine")
            .await
            .unwrap()
            .is_none()
    );
    // Everything else is there.
    assert!(
        deployments
            .get_opt("shop-payments-api")
            .await
            .unwrap()
            .is_some()
    );
    // Creating it is enough: the ConfigMap watch reconciles the system.
    model_config_map(&env, "nowhere", CARD, MODEL).await;
    wait_condition(&env, "shop", "Degraded", "False", TIMEOUT).await;
    assert_eq!(
        template(&env).await.annotations["paysys.io/model-version"],
        version()
    );
}

/// A model from a Secret: checked like a ConfigMap's, served from an owned immutable Secret
/// copy; the user's Secret and the generated ones are left alone. A spec that changes to a
/// corrupt model and changes another field at once gets the other field applied while the
/// engine keeps its model; fixing the model rolls it out, clears `Degraded`, and prunes the old
/// copy once no pod template mounts it.
#[tokio::test]
async fn a_secret_model_is_served_from_an_owned_copy_and_a_broken_one_blocks_nothing_else() {
    let Some(env) = env("risk-model-secret").await else {
        return;
    };
    let _operator = Operator::start(env.client.clone(), &env.namespace);
    let version = version();
    let secrets: Api<Secret> = Api::namespaced(env.client.clone(), &env.namespace);
    model_secret(&env, "risk-model", CARD, MODEL).await;
    let user_secret = secrets.get("risk-model").await.unwrap();
    apply_system(&env, &system("{secret: {name: risk-model}}")).await;
    wait_condition(&env, "shop", "Degraded", "False", TIMEOUT).await;

    let served = template(&env).await;
    assert_eq!(served.annotations["paysys.io/model-version"], version);
    assert!(!served.config_map_volumes.contains_key("model"));
    let copy_name = served.secret_volumes["model"].clone();
    assert!(copy_name.starts_with("shop-model-"), "{copy_name}");
    let copy = secrets.get(&copy_name).await.unwrap();
    assert_eq!(copy.immutable, Some(true));
    let owner = &copy.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str()),
        ("PaymentSystem", "shop")
    );
    assert_eq!(owner.controller, Some(true));
    let data = copy.data.unwrap();
    assert_eq!(data["model.txt"].0, MODEL.as_bytes());
    assert_eq!(data["model-card.json"].0, CARD.as_bytes());
    // The user's Secret is only read; the generated API key is still the one made first.
    let api_key = secrets.get("shop-api-key").await.unwrap();
    assert_eq!(
        secrets
            .get("risk-model")
            .await
            .unwrap()
            .metadata
            .resource_version,
        user_secret.metadata.resource_version
    );

    let kubelet = FakeKubelet::start(env.client.clone(), &env.namespace)
        .await
        .unwrap();
    wait_condition(&env, "shop", "Ready", "True", TIMEOUT).await;
    assert_eq!(model_status(&env).await, (Some(version.clone()), None));

    // At once: the model moves to a Secret holding a corrupt one, and the API's log level
    // changes.
    let corrupt = MODEL.replacen("leaf_value=", "leaf_value=9", 1);
    model_secret(&env, "risk-model-next", CARD, &corrupt).await;
    apply_system(
        &env,
        &system_with(
            "{secret: {name: risk-model-next}}",
            "  paymentsApi: {logLevel: debug}\n",
        ),
    )
    .await;
    let ps = wait_condition(&env, "shop", "Degraded", "True", TIMEOUT).await;
    let degraded = condition(&ps, "Degraded").unwrap();
    assert_eq!(degraded.reason, "ModelInvalid");
    assert!(
        degraded.message.starts_with(
            "the risk model in Secret risk-model-next key model.txt cannot be served: model "
        ) && degraded.message.contains("sha256 is")
            && degraded.message.ends_with(&format!(
                "the risk engine serves model {version}, every other change is applied"
            )),
        "{}",
        degraded.message
    );
    assert!(
        !degraded.message.contains("leaf_value"),
        "never the content: {}",
        degraded.message
    );
    // The other field is applied; the engine's template still mounts the old copy.
    api_log_level_becomes(&env, "debug").await;
    let kept = template(&env).await;
    assert_eq!(kept.annotations, served.annotations);
    assert_eq!(kept.secret_volumes, served.secret_volumes);
    assert!(secrets.get_opt(&copy_name).await.unwrap().is_some());
    assert_eq!(model_status(&env).await, (Some(version.clone()), None));
    eventually(
        "the system ready again with the old model",
        TIMEOUT,
        || async {
            let ps = Api::<PaymentSystem>::namespaced(env.client.clone(), &env.namespace)
                .get("shop")
                .await
                .ok()?;
            (condition(&ps, "Ready")?.status == "True").then_some(())
        },
    )
    .await;

    // Fixed with another good model (another card: another copy): rolled out, Degraded
    // cleared, the old copy pruned once no template mounts it.
    let edited = CARD.replacen("\"seed\"", "\"seed_note\": 1, \"seed\"", 1);
    model_secret(&env, "risk-model-next", &edited, MODEL).await;
    wait_condition(&env, "shop", "Degraded", "False", TIMEOUT).await;
    let fixed = template(&env).await;
    let new_copy = fixed.secret_volumes["model"].clone();
    assert_ne!(new_copy, copy_name);
    assert_eq!(
        secrets.get(&new_copy).await.unwrap().data.unwrap()["model-card.json"].0,
        edited.as_bytes()
    );
    eventually("the old copy pruned", TIMEOUT, || async {
        secrets
            .get_opt(&copy_name)
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;
    wait_condition(&env, "shop", "Ready", "True", TIMEOUT).await;
    // Neither the user's Secrets nor the generated one were touched.
    assert_eq!(
        secrets
            .get("risk-model")
            .await
            .unwrap()
            .metadata
            .resource_version,
        user_secret.metadata.resource_version
    );
    let user_next = secrets.get("risk-model-next").await.unwrap();
    assert!(user_next.metadata.owner_references.is_none());
    assert_eq!(
        secrets.get("shop-api-key").await.unwrap().data,
        api_key.data
    );
    drop(kubelet);
}

/// A first model refused: the risk engine running the rules is left exactly as it was while
/// the rest of the spec is applied; the model, once good, rolls out.
#[tokio::test]
async fn a_refused_first_model_leaves_the_rules_engine_as_it_was() {
    let Some(env) = env("risk-model-first").await else {
        return;
    };
    let _operator = Operator::start(env.client.clone(), &env.namespace);
    apply_system(
        &env,
        "apiVersion: paysys.io/v1alpha1\nkind: PaymentSystem\nmetadata: {name: shop}\nspec: {}\n",
    )
    .await;
    wait_condition(&env, "shop", "Degraded", "False", TIMEOUT).await;
    let deployments: Api<Deployment> = Api::namespaced(env.client.clone(), &env.namespace);
    let rules = deployments.get("shop-risk-engine").await.unwrap();

    apply_system(
        &env,
        &system_with(
            "{secret: {name: not-yet}}",
            "  paymentsApi: {logLevel: debug}\n",
        ),
    )
    .await;
    let ps = wait_condition(&env, "shop", "Degraded", "True", TIMEOUT).await;
    let degraded = condition(&ps, "Degraded").unwrap();
    assert_eq!(degraded.reason, "ModelNotFound");
    assert!(
        degraded.message.contains("Secret not-yet not found")
            && degraded
                .message
                .contains("the risk engine is left as it is"),
        "{}",
        degraded.message
    );
    api_log_level_becomes(&env, "debug").await;
    let held = deployments.get("shop-risk-engine").await.unwrap();
    assert_eq!(held.spec.template, rules.spec.template);
    assert_eq!(held.metadata.generation, rules.metadata.generation);
    assert_eq!(
        env_var(&env, "shop-risk-engine", "RISK_MODE")
            .await
            .as_deref(),
        Some("rules")
    );

    // The Secret appears: the Secret watch reconciles, the model rolls out.
    model_secret(&env, "not-yet", CARD, MODEL).await;
    wait_condition(&env, "shop", "Degraded", "False", TIMEOUT).await;
    let rolled = template(&env).await;
    assert_eq!(rolled.env["RISK_MODE"], "model");
    assert_eq!(rolled.annotations["paysys.io/model-version"], version());
    assert!(rolled.secret_volumes["model"].starts_with("shop-model-"));
}

/// Binds `pod` and reports it as the kubelet would after the engine refused its model: exit
/// 2, the refusal as termination message, restarting.
async fn refuse(env: &Env, pod: &Pod, message: &str) {
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), &env.namespace);
    let name = pod.name_any();
    let binding = Binding {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            ..Default::default()
        },
        target: ObjectReference {
            kind: Some("Node".into()),
            name: Some(NODE.into()),
            api_version: Some("v1".into()),
            ..Default::default()
        },
    };
    pods.create_subresource::<_, serde_json::Value>(
        "binding",
        &name,
        &PostParams::default(),
        &binding,
    )
    .await
    .unwrap();
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    let status = json!({"status": {
        "phase": "Running",
        "conditions": [{"type": "Ready", "status": "False", "lastTransitionTime": now}],
        "containerStatuses": [{
            "name": "risk-engine", "image": "risk-engine", "imageID": "", "ready": false,
            "restartCount": 3,
            "state": {"waiting": {"reason": "CrashLoopBackOff"}},
            "lastState": {"terminated": {
                "exitCode": 2, "reason": "Error", "message": message,
                "startedAt": now, "finishedAt": now,
            }},
        }],
    }});
    pods.patch_status(&name, &PatchParams::default(), &Patch::Merge(status))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_claim_model_the_engine_refuses_is_degraded_and_the_old_pod_keeps_serving() {
    let Some(env) = env("risk-model-claim").await else {
        return;
    };
    let _operator = Operator::start(env.client.clone(), &env.namespace);
    let claim = |version: &str| {
        format!(
            "{{persistentVolumeClaim: {{claimName: models, subPath: {version}, version: {version}}}}}"
        )
    };
    apply_system(&env, &system(&claim("m-old"))).await;
    let kubelet = FakeKubelet::start(env.client.clone(), &env.namespace)
        .await
        .unwrap();
    wait_condition(&env, "shop", "Ready", "True", TIMEOUT).await;
    assert_eq!(model_status(&env).await, (Some("m-old".into()), None));
    let old = template(&env).await;
    assert_eq!(old.env["MODEL_VERSION"], "m-old");
    assert_eq!(old.env["MODEL_DIR"], "/etc/paysys/model");
    drop(kubelet);
    ensure_node(&env.client).await.unwrap();

    // The claim's directory m-new holds another model: the new pod refuses it.
    apply_system(&env, &system(&claim("m-new"))).await;
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), &env.namespace);
    let new_pod = eventually("the new risk engine pod", TIMEOUT, || async {
        pods.list(&ListParams::default().labels("app.kubernetes.io/name=risk-engine"))
            .await
            .ok()?
            .items
            .into_iter()
            .find(|pod| {
                pod.annotations()
                    .get("paysys.io/model-version")
                    .map(String::as_str)
                    == Some("m-new")
            })
    })
    .await;
    let refusal = "risk-engine: invalid configuration: MODEL_VERSION: is m-new, but /etc/paysys/model (MODEL_DIR) holds model m-f083e2cc9b36486b: the directory is not the model being rolled out";
    refuse(&env, &new_pod, refusal).await;
    let ps = wait_condition(&env, "shop", "Degraded", "True", TIMEOUT).await;
    let degraded = condition(&ps, "Degraded").unwrap();
    assert_eq!(degraded.reason, "ModelRefused");
    assert!(
        degraded.message.contains(&new_pod.name_any()) && degraded.message.contains(refusal),
        "{}",
        degraded.message
    );
    // The old pod still runs the old model, which the status still reports.
    let old_pods: Vec<Pod> = pods
        .list(&ListParams::default().labels("app.kubernetes.io/name=risk-engine"))
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|pod| {
            pod.annotations()
                .get("paysys.io/model-version")
                .map(String::as_str)
                == Some("m-old")
        })
        .collect();
    assert_eq!(old_pods.len(), 1);
    assert!(old_pods[0].metadata.deletion_timestamp.is_none());
    assert_eq!(model_status(&env).await, (Some("m-old".into()), None));

    // The refusal blocks nothing else: another change of the spec is applied meanwhile.
    apply_system(
        &env,
        &system_with(&claim("m-new"), "  paymentsApi: {logLevel: debug}\n"),
    )
    .await;
    api_log_level_becomes(&env, "debug").await;
    let ps = wait_condition(&env, "shop", "Degraded", "True", TIMEOUT).await;
    assert_eq!(condition(&ps, "Degraded").unwrap().reason, "ModelRefused");
    assert_eq!(model_status(&env).await, (Some("m-old".into()), None));
}

async fn printer_columns(env: &Env) -> BTreeMap<String, serde_json::Value> {
    crate::reconcile::printer_columns(env, "shop").await
}
