//! `spec.monitoring.serviceMonitor` on a real API server with the Prometheus Operator's real
//! `ServiceMonitor` CRD (`tests/fixtures/foreign-crds`): without the CRD the system is
//! `Degraded` (`CrdMissing`) and nothing is applied; once it is installed, a `ServiceMonitor`
//! per service is created as that CRD accepts it, selecting the Service of its service (the
//! risk engine's headless metrics Service, built for it); without `monitoring` the monitors
//! and that Service are pruned.

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use paysys_operator::build::service_monitor::ServiceMonitor;

use crate::support::{
    Operator, TEST_MANAGER, apply_system, condition, env, eventually, wait_condition,
};

const TIMEOUT: Duration = Duration::from_secs(30);
const CRD: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/foreign-crds/monitoring.coreos.com_servicemonitors.yaml"
);

fn crd() -> CustomResourceDefinition {
    let text = std::fs::read_to_string(CRD).expect("read the fixture");
    serde_norway::from_str(&text).expect("the fixture is a CRD")
}

/// Installs the `ServiceMonitor` CRD (idempotent) and waits until it is served.
async fn install_crd(client: &Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd = crd();
    let name = crd.name_any();
    crds.patch(
        &name,
        &PatchParams::apply(TEST_MANAGER).force(),
        &Patch::Apply(&crd),
    )
    .await
    .unwrap_or_else(|e| panic!("the API server accepts the ServiceMonitor CRD: {e}"));
    eventually(&format!("{name} to be Established"), TIMEOUT, || async {
        let crd = crds.get(&name).await.ok()?;
        crd.status?
            .conditions?
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True")
            .then_some(())
    })
    .await;
}

const MONITORED: &str = "
apiVersion: paysys.io/v1alpha1
kind: PaymentSystem
metadata: {name: shop}
spec:
  monitoring:
    serviceMonitor: {labels: {release: prometheus}}
";

const UNMONITORED: &str = "
apiVersion: paysys.io/v1alpha1
kind: PaymentSystem
metadata: {name: shop}
spec: {}
";

/// No other test uses the `ServiceMonitor` CRD: it is absent until this test installs it, so
/// this test needs no control plane of its own.
#[tokio::test]
async fn service_monitors_need_their_crd_then_select_each_service_and_go_when_unset() {
    let Some(env) = env("service-monitors").await else {
        return;
    };
    let crds: Api<CustomResourceDefinition> = Api::all(env.client.clone());
    assert!(
        crds.get_opt(&crd().name_any()).await.unwrap().is_none(),
        "the ServiceMonitor CRD is not installed yet"
    );
    let _operator = Operator::start(env.client.clone(), &env.namespace);
    apply_system(&env, MONITORED).await;

    // Without the CRD: CrdMissing, naming the CRD and its operator, and nothing applied.
    let ps = wait_condition(&env, "shop", "Degraded", "True", TIMEOUT).await;
    let degraded = condition(&ps, "Degraded").unwrap();
    assert_eq!(degraded.reason, "CrdMissing", "{}", degraded.message);
    for expected in [
        "servicemonitors.monitoring.coreos.com",
        "the Prometheus Operator",
        "bundle.yaml",
    ] {
        assert!(
            degraded.message.contains(expected),
            "{expected}: {}",
            degraded.message
        );
    }
    let deployments: Api<Deployment> = Api::namespaced(env.client.clone(), &env.namespace);
    assert!(
        deployments
            .get_opt("shop-payments-api")
            .await
            .unwrap()
            .is_none(),
        "nothing is applied while a CRD is missing"
    );

    // Installed: retried with backoff (5 s, 10 s, ...) and reconciled.
    install_crd(&env.client).await;
    wait_condition(&env, "shop", "Degraded", "False", Duration::from_secs(90)).await;
    let monitors: Api<ServiceMonitor> = Api::namespaced(env.client.clone(), &env.namespace);
    let services: Api<Service> = Api::namespaced(env.client.clone(), &env.namespace);
    let uid = ps.uid().unwrap();
    for (name, port) in [("shop-payments-api", 80), ("shop-risk-engine", 8080)] {
        let monitor = monitors
            .get(name)
            .await
            .unwrap_or_else(|e| panic!("ServiceMonitor {name}: {e}"));
        let labels = monitor.labels();
        assert_eq!(
            labels.get("release").map(String::as_str),
            Some("prometheus")
        );
        assert_eq!(
            labels
                .get("app.kubernetes.io/managed-by")
                .map(String::as_str),
            Some("paysys-operator")
        );
        assert!(
            monitor
                .owner_references()
                .iter()
                .any(|owner| owner.uid == uid && owner.controller == Some(true)),
            "{name} is controlled by its PaymentSystem"
        );
        let endpoint = &monitor.spec.endpoints[..];
        assert_eq!(endpoint.len(), 1, "{name}");
        assert_eq!(
            (endpoint[0].port.as_str(), endpoint[0].path.as_str()),
            ("http", "/metrics")
        );
        // The selector picks exactly the service's Service, whose `http` port is scraped.
        let selector = monitor
            .spec
            .selector
            .match_labels
            .clone()
            .unwrap_or_default();
        let selected: Vec<Service> = services
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|service| {
                selector
                    .iter()
                    .all(|(key, value)| service.labels().get(key) == Some(value))
            })
            .collect();
        assert_eq!(selected.len(), 1, "{name} selects one Service");
        assert_eq!(selected[0].name_any(), name);
        let ports = selected[0].spec.as_ref().unwrap().ports.clone().unwrap();
        assert!(
            ports
                .iter()
                .any(|p| p.name.as_deref() == Some("http") && p.port == port),
            "{name}: {ports:?}"
        );
    }
    let risk = services.get("shop-risk-engine").await.unwrap();
    assert_eq!(
        risk.spec.unwrap().cluster_ip.as_deref(),
        Some("None"),
        "the risk engine's metrics Service is headless"
    );

    // Unset: the monitors and the risk engine's Service are pruned, the API's Service stays.
    apply_system(&env, UNMONITORED).await;
    wait_condition(&env, "shop", "Degraded", "False", TIMEOUT).await;
    eventually("the monitors to be pruned", TIMEOUT, || async {
        let left = monitors.list(&Default::default()).await.ok()?.items;
        let risk = services.get_opt("shop-risk-engine").await.ok()?;
        (left.is_empty() && risk.is_none()).then_some(())
    })
    .await;
    assert!(
        services
            .get_opt("shop-payments-api")
            .await
            .unwrap()
            .is_some()
    );
    let _ = crds
        .delete(&crd().name_any(), &DeleteParams::default())
        .await;
}
