//! The chart for real: `helm install`, `helm upgrade` (the CRD is re-applied), `helm
//! uninstall` (the CRD is kept), and installing again into another namespace.

use std::process::Command;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Api;
use kube::api::{Patch, PatchParams};
use paysys_testkit::envtest::ControlPlane;

use crate::support::{env, eventually, helm};

const CRD: &str = "paymentsystems.paysys.io";
const TIMEOUT: Duration = Duration::from_secs(30);

/// Runs `helm <args>` against the control plane as admin; panics with helm's output on failure.
fn run_helm(args: &[&str]) {
    let cluster = ControlPlane::get().expect("started");
    let output = Command::new(helm())
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .args(args)
        .arg("--kubeconfig")
        .arg(cluster.admin_kubeconfig())
        .output()
        .expect("run helm");
    assert!(
        output.status.success(),
        "helm {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test]
async fn helm_install_upgrade_uninstall_and_install_again_elsewhere() {
    let Some(env) = env("helm").await else {
        return;
    };
    let crds: Api<CustomResourceDefinition> = Api::all(env.client.clone());
    let release_namespace = |crd: &CustomResourceDefinition| {
        crd.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get("meta.helm.sh/release-namespace").cloned())
    };
    // The test binary installed the CRD itself; helm adopts it (--take-ownership).
    run_helm(&[
        "install",
        "paysys",
        "charts/paysys",
        "-n",
        &env.namespace,
        "--take-ownership",
    ]);
    let deployments: Api<Deployment> = Api::namespaced(env.client.clone(), &env.namespace);
    let operator = deployments.get("paysys-operator").await.unwrap();
    assert_eq!(operator.spec.replicas, Some(2));
    let crd = crds.get(CRD).await.unwrap();
    assert_eq!(
        release_namespace(&crd).as_deref(),
        Some(env.namespace.as_str())
    );
    let chart_label = crd.metadata.labels.clone().unwrap()["helm.sh/chart"].clone();

    // Upgrade: the CRD is applied again (a tampered label of the chart's is put back), and
    // the operator changes as asked.
    crds.patch(
        CRD,
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"metadata": {"labels": {"helm.sh/chart": "tampered"}}})),
    )
    .await
    .unwrap();
    run_helm(&[
        "upgrade",
        "paysys",
        "charts/paysys",
        "-n",
        &env.namespace,
        "--force-conflicts",
        "--set",
        "operator.replicas=1",
    ]);
    let crd = crds.get(CRD).await.unwrap();
    assert_eq!(crd.metadata.labels.unwrap()["helm.sh/chart"], chart_label);
    assert_eq!(
        deployments
            .get("paysys-operator")
            .await
            .unwrap()
            .spec
            .replicas,
        Some(1)
    );

    // Uninstall: the operator goes, the CRD (and so every PaymentSystem) stays.
    run_helm(&["uninstall", "paysys", "-n", &env.namespace]);
    eventually("the operator Deployment gone", TIMEOUT, || async {
        deployments
            .get_opt("paysys-operator")
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;
    crds.get(CRD).await.expect("the CRD is kept");

    // And again, into another namespace.
    let cluster = ControlPlane::get().unwrap();
    let other = cluster.namespace("helm-again").await;
    run_helm(&[
        "install",
        "paysys",
        "charts/paysys",
        "-n",
        &other,
        "--take-ownership",
    ]);
    Api::<Deployment>::namespaced(env.client.clone(), &other)
        .get("paysys-operator")
        .await
        .expect("the operator in the other namespace");
    let crd = crds.get(CRD).await.unwrap();
    assert_eq!(release_namespace(&crd).as_deref(), Some(other.as_str()));
    run_helm(&["uninstall", "paysys", "-n", &other]);
    crds.get(CRD).await.expect("the CRD is kept");
}
