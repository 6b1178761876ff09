//! The risk model on a real API server: a good model in a ConfigMap is copied, mounted and
//! rolled out, and reported once every pod runs it (the test plays kubelet); a corrupt one or
//! one of other features is refused with `Degraded` and the pod template is left as it was; a
//! challenger is reported; a model on a claim that the engine refuses (a new pod exiting 2)
//! makes the system `Degraded` with the engine's message while the old pod keeps serving.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Binding, ConfigMap, ObjectReference, Pod};
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

fn system(model: &str) -> String {
    format!(
        "apiVersion: paysys.io/v1alpha1\nkind: PaymentSystem\nmetadata: {{name: shop}}\n\
         spec:\n  riskEngine:\n    mode: model\n    model: {model}\n"
    )
}

/// The risk engine Deployment's pod template: annotations, volumes by name, env by name.
struct Template {
    annotations: BTreeMap<String, String>,
    config_map_volumes: BTreeMap<String, String>,
    env: BTreeMap<String, String>,
}

async fn template(env: &Env) -> Template {
    let deployment = Api::<Deployment>::namespaced(env.client.clone(), &env.namespace)
        .get("shop-risk-engine")
        .await
        .unwrap();
    let template = deployment.spec.template;
    let pod = template.spec.unwrap();
    Template {
        annotations: template.metadata.unwrap().annotations.unwrap_or_default(),
        config_map_volumes: pod
            .volumes
            .unwrap_or_default()
            .into_iter()
            .filter_map(|v| Some((v.name, v.config_map?.name)))
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
            && degraded.message.contains("sha256 is"),
        "{}",
        degraded.message
    );
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
async fn a_missing_model_config_map_is_degraded_and_creates_no_risk_engine() {
    let Some(env) = env("risk-model-missing").await else {
        return;
    };
    let _operator = Operator::start(env.client.clone(), &env.namespace);
    apply_system(&env, &system("{configMap: {name: nowhere}}")).await;
    let ps = wait_condition(&env, "shop", "Degraded", "True", TIMEOUT).await;
    let degraded = condition(&ps, "Degraded").unwrap();
    assert_eq!(degraded.reason, "ModelNotFound");
    assert!(degraded.message.contains("nowhere"), "{}", degraded.message);
    let deployments: Api<Deployment> = Api::namespaced(env.client.clone(), &env.namespace);
    assert!(
        deployments
            .get_opt("shop-risk-engine")
            .await
            .unwrap()
            .is_none()
    );
    // Creating it is enough: the ConfigMap watch reconciles the system.
    model_config_map(&env, "nowhere", CARD, MODEL).await;
    wait_condition(&env, "shop", "Degraded", "False", TIMEOUT).await;
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
}

async fn printer_columns(env: &Env) -> BTreeMap<String, serde_json::Value> {
    crate::reconcile::printer_columns(env, "shop").await
}
