//! Autoscaling on a real API server: the operator creates the HorizontalPodAutoscaler, the
//! autoscaler (kube-controller-manager's, or anyone through the `scale` subresource) owns
//! `spec.replicas`, and the operator's server-side apply never fights it.

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::Api;
use kube::api::{Patch, PatchParams};
use paysys_operator::apply::replicas::{HANDOVER_MANAGER, operator_owns_replicas};
use paysys_operator::names::FIELD_MANAGER;
use serde_json::json;

use crate::support::{Env, Operator, apply_system, env, eventually, wait_condition};

const TIMEOUT: Duration = Duration::from_secs(30);
/// The autoscaler controller syncs every 15 s.
const HPA_TIMEOUT: Duration = Duration::from_secs(90);

fn system(api: &str) -> String {
    format!(
        "apiVersion: paysys.io/v1alpha1\nkind: PaymentSystem\nmetadata:\n  name: shop\nspec:\n  paymentsApi: {api}\n"
    )
}

async fn deployment(env: &Env) -> Deployment {
    Api::<Deployment>::namespaced(env.client.clone(), &env.namespace)
        .get("shop-payments-api")
        .await
        .unwrap()
}

/// The managers owning the Deployment's `spec.replicas`.
fn replicas_owners(deployment: &Deployment) -> Vec<String> {
    deployment
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .filter(|entry| {
            entry
                .fields_v1
                .as_ref()
                .is_some_and(|fields| fields.0["f:spec"].get("f:replicas").is_some())
        })
        .map(|entry| entry.manager.clone().unwrap_or_default())
        .collect()
}

/// Applies `api` as the `paymentsApi` spec and waits until the operator reconciled it.
async fn reconcile(env: &Env, api: &str) {
    apply_system(env, &system(api)).await;
    wait_condition(env, "shop", "Degraded", "False", TIMEOUT).await;
}

#[tokio::test]
async fn the_autoscaler_owns_replicas_and_the_operator_never_fights_it() {
    let Some(env) = env("autoscaling").await else {
        return;
    };
    let _operator = Operator::start(env.client.clone(), &env.namespace);
    reconcile(
        &env,
        "{autoscaling: {minReplicas: 3, maxReplicas: 5, targetCPUUtilizationPercentage: 60}}",
    )
    .await;
    let hpa = Api::<HorizontalPodAutoscaler>::namespaced(env.client.clone(), &env.namespace)
        .get("shop-payments-api")
        .await
        .expect("the autoscaler exists");
    assert_eq!(hpa.spec.min_replicas, Some(3));
    assert_eq!(hpa.spec.max_replicas, 5);
    assert_eq!(hpa.spec.scale_target_ref.name, "shop-payments-api");
    // The budget follows minReplicas.
    Api::<PodDisruptionBudget>::namespaced(env.client.clone(), &env.namespace)
        .get("shop-payments-api")
        .await
        .expect("minReplicas 3 gets a budget");

    // The real autoscaler (kube-controller-manager) raises the Deployment to minReplicas.
    let scaled = eventually("the autoscaler to scale to 3", HPA_TIMEOUT, || async {
        let deployment = deployment(&env).await;
        (deployment.spec.replicas == Some(3)).then_some(deployment)
    })
    .await;
    assert!(
        !operator_owns_replicas(&scaled),
        "{:?}",
        replicas_owners(&scaled)
    );

    // Another writer (as the autoscaler does) sets 4 through the scale subresource.
    let deployments: Api<Deployment> = Api::namespaced(env.client.clone(), &env.namespace);
    deployments
        .patch_scale(
            "shop-payments-api",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 4}})),
        )
        .await
        .unwrap();
    // A spec change makes the operator apply the Deployment again (a new template) ...
    reconcile(
        &env,
        "{logLevel: debug, autoscaling: {minReplicas: 3, maxReplicas: 5, targetCPUUtilizationPercentage: 60}}",
    )
    .await;
    let applied = eventually("the new template", TIMEOUT, || async {
        let deployment = deployment(&env).await;
        let env_vars = deployment.spec.template.spec.as_ref()?.containers[0]
            .env
            .clone()?;
        env_vars
            .iter()
            .any(|var| var.name == "RUST_LOG" && var.value.as_deref() == Some("debug"))
            .then_some(deployment)
    })
    .await;
    // ... without touching the count (and Degraded=False above: no conflict).
    assert_eq!(applied.spec.replicas, Some(4));
    assert!(!operator_owns_replicas(&applied));
}

/// Turning autoscaling on for a Deployment whose count the operator wrote must not drop it to
/// the default of one pod; turning it off gives the count back to `replicas`.
#[tokio::test]
async fn switching_autoscaling_on_and_off_keeps_the_running_pods() {
    let Some(env) = env("autoscaling-switch").await else {
        return;
    };
    let _operator = Operator::start(env.client.clone(), &env.namespace);
    reconcile(&env, "{replicas: 4}").await;
    let manual = deployment(&env).await;
    assert_eq!(manual.spec.replicas, Some(4));
    assert!(operator_owns_replicas(&manual));

    reconcile(
        &env,
        "{replicas: 4, autoscaling: {minReplicas: 2, maxReplicas: 6}}",
    )
    .await;
    let handed_over = deployment(&env).await;
    assert_eq!(handed_over.spec.replicas, Some(4), "the count was reset");
    let owners = replicas_owners(&handed_over);
    assert!(!owners.contains(&FIELD_MANAGER.to_string()), "{owners:?}");
    assert!(owners.contains(&HANDOVER_MANAGER.to_string()), "{owners:?}");

    reconcile(&env, "{replicas: 2}").await;
    let back = eventually("the operator's count", TIMEOUT, || async {
        let deployment = deployment(&env).await;
        (deployment.spec.replicas == Some(2)).then_some(deployment)
    })
    .await;
    assert!(operator_owns_replicas(&back));
    eventually("the autoscaler to be pruned", TIMEOUT, || async {
        Api::<HorizontalPodAutoscaler>::namespaced(env.client.clone(), &env.namespace)
            .get_opt("shop-payments-api")
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;
}
