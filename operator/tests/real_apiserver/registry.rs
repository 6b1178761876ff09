//! The chart installed from an OCI registry: `scripts/test-registry.sh` runs a registry on
//! loopback, pushes the images and the chart there (`scripts/images.sh --push ... --chart`),
//! and runs this test with `PAYSYS_TEST_REGISTRY` (`127.0.0.1:<port>/paysys`) and
//! `PAYSYS_TEST_REGISTRY_TAG`. It installs `oci://<registry>/paysys` on the real API server
//! with one value naming the registry, lets the operator reconcile the chart's PaymentSystem,
//! and checks that every image reference (the operator's and every child's) is the registry's.
//! Without those variables (a plain `cargo test`) it skips with one line.

use std::process::Command;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::PodSpec;
use kube::Api;
use kube::api::ListParams;
use paysys_testkit::envtest::ControlPlane;

use crate::support::{Operator, env, eventually, helm};

/// The images the chart and the operator create pods from, by name; the managed servers'
/// images are mirrored into the same registry by setting them in the spec.
fn pod_images(pod: Option<&PodSpec>) -> Vec<String> {
    let Some(pod) = pod else { return Vec::new() };
    pod.containers
        .iter()
        .chain(pod.init_containers.iter().flatten())
        .filter_map(|container| container.image.clone())
        .collect()
}

#[tokio::test]
async fn the_chart_from_an_oci_registry_points_every_pod_at_that_registry() {
    let (Ok(registry), Ok(tag)) = (
        std::env::var("PAYSYS_TEST_REGISTRY"),
        std::env::var("PAYSYS_TEST_REGISTRY_TAG"),
    ) else {
        eprintln!(
            "skipping the registry test: run scripts/test-registry.sh (it runs a registry and sets PAYSYS_TEST_REGISTRY)"
        );
        return;
    };
    let Some(env) = env("registry").await else {
        return;
    };
    let (host, path) = registry.split_once('/').expect("REGISTRY is host/path");
    let cluster = ControlPlane::get().expect("started");
    let postgres = format!("{registry}/postgres:16.6-alpine");
    let rabbitmq = format!("{registry}/rabbitmq:3.13.7");
    let chart = format!("oci://{registry}/paysys");
    let values = [
        format!("image.registry={host}"),
        format!("image.repository={path}"),
        "imagePullSecrets[0].name=regcred".to_string(),
        "paymentSystem.enabled=true".to_string(),
        "paymentSystem.name=shop".to_string(),
        // PostgreSQL and RabbitMQ are not paysys images: a private registry mirrors them, and
        // the spec names the mirror.
        format!("paymentSystem.spec.database.managed.image={postgres}"),
        format!("paymentSystem.spec.rabbitmq.managed.image={rabbitmq}"),
    ];
    let mut args: Vec<&str> = vec![
        "install",
        "paysys",
        &chart,
        "--version",
        &tag,
        "--plain-http",
        "-n",
        &env.namespace,
        // The test binary installed the CRD itself; helm adopts it.
        "--take-ownership",
    ];
    for value in &values {
        args.extend(["--set", value]);
    }
    let output = Command::new(helm())
        .args(&args)
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
    let notes = String::from_utf8_lossy(&output.stdout);
    assert!(
        notes.contains(&format!("Images from {registry}/")),
        "NOTES name the registry:\n{notes}"
    );

    // The chart's operator Deployment, from the registry, at the tag the chart was packaged
    // with (its appVersion).
    let deployments: Api<Deployment> = Api::namespaced(env.client.clone(), &env.namespace);
    let operator = deployments.get("paysys-operator").await.unwrap();
    let operator_pod = operator.spec.template.spec.as_ref();
    assert_eq!(
        pod_images(operator_pod),
        vec![format!("{registry}/paysys-operator:{tag}")]
    );
    assert_eq!(
        operator_pod.unwrap().image_pull_secrets.as_ref().unwrap()[0].name,
        "regcred"
    );

    // The chart's PaymentSystem, reconciled by the operator: every child from the registry.
    let reconciler = Operator::start(env.client.clone(), &env.namespace);
    let statefulsets: Api<StatefulSet> = Api::namespaced(env.client.clone(), &env.namespace);
    let children = eventually(
        "the PaymentSystem's children",
        Duration::from_secs(60),
        || async {
            let deployments = deployments.list(&ListParams::default()).await.ok()?;
            let statefulsets = statefulsets.list(&ListParams::default()).await.ok()?;
            let mut children: Vec<(String, PodSpec)> = Vec::new();
            for deployment in deployments.items {
                let name = deployment.metadata.name.clone().unwrap_or_default();
                if name != "paysys-operator" {
                    children.push((name, deployment.spec.template.spec?));
                }
            }
            for statefulset in statefulsets.items {
                let name = statefulset.metadata.name.clone().unwrap_or_default();
                children.push((name, statefulset.spec.template.spec?));
            }
            // API, risk engine, RabbitMQ, PostgreSQL.
            (children.len() >= 4).then_some(children)
        },
    )
    .await;
    reconciler.stop().await;
    let mut seen = Vec::new();
    for (name, pod) in &children {
        for image in pod_images(Some(pod)) {
            assert!(
                image.starts_with(&format!("{registry}/")),
                "{name} runs {image}, not an image of {registry}"
            );
            seen.push(image);
        }
        let secrets: Vec<&str> = pod
            .image_pull_secrets
            .iter()
            .flatten()
            .map(|secret| secret.name.as_str())
            .collect();
        assert!(
            secrets.contains(&"regcred"),
            "{name} pulls without the registry's Secret: {secrets:?}"
        );
    }
    for expected in [
        format!("{registry}/payments-api:{tag}"),
        format!("{registry}/risk-engine:{tag}"),
        postgres,
        rabbitmq,
    ] {
        assert!(
            seen.contains(&expected),
            "no child runs {expected}: {seen:?}"
        );
    }
}
