//! Builder tests of dependencies handed to other operators (`database.cloudNativePG`,
//! `rabbitmq.clusterOperator`): the resources, their ownership, and the services' wiring.

mod common;

use common::{system, validated};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::EnvVar;
use paysys_operator::build::{Children, build};
use paysys_operator::validate::{self, ValidationError};

fn children(spec: &str) -> Children {
    build(&validated(&system(spec), &[]))
}

fn env<'a>(deployment: &'a Deployment, name: &str) -> &'a EnvVar {
    deployment.spec.template.spec.as_ref().unwrap().containers[0]
        .env
        .iter()
        .flatten()
        .find(|var| var.name == name)
        .unwrap_or_else(|| panic!("no {name}"))
}

fn from_secret(var: &EnvVar) -> Option<(String, String)> {
    let selector = var.value_from.as_ref()?.secret_key_ref.as_ref()?;
    Some((selector.name.clone(), selector.key.clone()))
}

fn deployment<'a>(children: &'a Children, name: &str) -> &'a Deployment {
    children
        .deployments
        .iter()
        .find(|d| d.metadata.name.as_deref() == Some(name))
        .unwrap_or_else(|| panic!("no Deployment {name}"))
}

const BOTH: &str = "
database:
  cloudNativePG:
    instances: 3
    storage: {size: 20Gi, storageClassName: ssd}
    imageName: ghcr.io/cloudnative-pg/postgresql:16.6
rabbitmq:
  clusterOperator: {replicas: 5, image: rabbitmq:3.13.7-management, deletionPolicy: Delete}
";

#[test]
fn operated_dependencies_build_their_resources_instead_of_servers() {
    let children = children(BOTH);
    let [cluster] = children.cnpg_clusters.as_slice() else {
        panic!("one Cluster: {:?}", children.cnpg_clusters)
    };
    assert_eq!(cluster.metadata.name.as_deref(), Some("shop-pg"));
    assert_eq!(cluster.spec.instances, 3);
    assert_eq!(cluster.spec.storage.size, "20Gi");
    assert_eq!(cluster.spec.storage.storage_class.as_deref(), Some("ssd"));
    assert_eq!(
        cluster.spec.image_name.as_deref(),
        Some("ghcr.io/cloudnative-pg/postgresql:16.6")
    );
    let [rabbit] = children.rabbitmq_clusters.as_slice() else {
        panic!("one RabbitmqCluster")
    };
    assert_eq!(rabbit.metadata.name.as_deref(), Some("shop-mq"));
    assert_eq!(rabbit.spec.replicas, 5);
    assert_eq!(rabbit.spec.persistence.storage, "10Gi");
    // No managed server, claim, credentials or their NetworkPolicies.
    let deployments: Vec<_> = children
        .deployments
        .iter()
        .filter_map(|d| d.metadata.name.clone())
        .collect();
    assert_eq!(deployments, ["shop-payments-api", "shop-risk-engine"]);
    assert!(children.persistent_volume_claims.is_empty());
    assert_eq!(children.network_policies.len(), 2);
    let generated: Vec<String> =
        paysys_operator::observe::secrets::generated_secrets(&system(BOTH))
            .into_iter()
            .map(|(_, name)| name)
            .collect();
    assert_eq!(generated, ["shop-api-key"]);
}

#[test]
fn only_delete_policy_makes_the_system_own_the_cluster() {
    let children = children(BOTH);
    // Default Retain: deleting the PaymentSystem leaves the database (and its data) alone.
    assert_eq!(children.cnpg_clusters[0].metadata.owner_references, None);
    let owners = children.rabbitmq_clusters[0]
        .metadata
        .owner_references
        .as_ref()
        .expect("Delete: owned");
    assert_eq!(owners[0].kind, "PaymentSystem");
    assert_eq!(owners[0].controller, Some(true));
    // Labelled as children either way (the watch maps them back by instance label).
    for labels in [
        &children.cnpg_clusters[0].metadata.labels,
        &children.rabbitmq_clusters[0].metadata.labels,
    ] {
        assert_eq!(
            labels.as_ref().unwrap()["app.kubernetes.io/instance"],
            "shop"
        );
    }
}

#[test]
fn services_read_the_urls_from_the_operators_secrets() {
    let children = children(BOTH);
    let api = deployment(&children, "shop-payments-api");
    assert_eq!(
        from_secret(env(api, "DATABASE_URL")),
        Some(("shop-pg-app".into(), "uri".into()))
    );
    for deployment in [api, deployment(&children, "shop-risk-engine")] {
        let raw = env(deployment, "PAYSYS_AMQP_URL_CONNECTION_STRING");
        assert_eq!(
            from_secret(raw),
            Some(("shop-mq-default-user".into(), "connection_string".into()))
        );
        // Defined before use, as `$(VAR)` expansion requires; `%2f` is the vhost `/`.
        let vars = deployment.spec.template.spec.as_ref().unwrap().containers[0]
            .env
            .as_ref()
            .unwrap();
        let position = |name: &str| vars.iter().position(|var| var.name == name).unwrap();
        assert!(position("PAYSYS_AMQP_URL_CONNECTION_STRING") < position("AMQP_URL"));
        assert_eq!(
            env(deployment, "AMQP_URL").value.as_deref(),
            Some("$(PAYSYS_AMQP_URL_CONNECTION_STRING)%2f")
        );
    }
}

#[test]
fn the_operators_secrets_are_watched_and_hashed_once_they_exist() {
    let ps = system(BOTH);
    let referenced = paysys_operator::observe::secrets::referenced_secrets(&ps);
    assert_eq!(referenced, ["shop-mq-default-user", "shop-pg-app"]);
    // Absent, the system is still valid (the operators create them later); present, their
    // content rolls the pods that read them.
    let before = children(BOTH);
    let after = build(&validated(
        &ps,
        &[(
            "shop-pg-app",
            &[("uri", "postgresql://app:rotated@shop-pg-rw:5432/app")],
        )],
    ));
    let hash = |children: &Children, name: &str| {
        deployment(children, name)
            .spec
            .template
            .metadata
            .as_ref()
            .unwrap()
            .annotations
            .as_ref()
            .unwrap()[paysys_operator::build::meta::CONFIG_HASH]
            .clone()
    };
    assert_ne!(
        hash(&before, "shop-payments-api"),
        hash(&after, "shop-payments-api")
    );
    assert_eq!(
        hash(&before, "shop-risk-engine"),
        hash(&after, "shop-risk-engine")
    );
}

#[test]
fn exactly_one_way_per_dependency() {
    for spec in [
        "database: {managed: {}, cloudNativePG: {}}",
        "database: {external: {secretName: db}, cloudNativePG: {}}",
        "database: {}",
        "rabbitmq: {managed: {}, clusterOperator: {}}",
        "rabbitmq: {external: {secretName: mq}, clusterOperator: {}}",
    ] {
        let error = validate::check(&system(spec)).unwrap_err();
        assert!(
            matches!(&error, ValidationError::InvalidSpec(message) if message.contains("exactly one")),
            "{spec}: {error}"
        );
    }
}

#[test]
fn the_production_example_uses_both_operators() {
    let text = include_str!("../../examples/paymentsystem-production.yaml");
    let mut ps: paysys_operator::crd::PaymentSystem =
        serde_norway::from_str(text).expect("the example parses");
    ps.metadata.namespace = Some("payments".into());
    ps.metadata.uid = Some("0b7a3f4e-1111-2222-3333-444455556666".into());
    let children = build(&validated(&ps, &[]));
    assert_eq!(children.cnpg_clusters[0].spec.instances, 3);
    assert_eq!(children.rabbitmq_clusters[0].spec.replicas, 3);
    assert!(
        children.cnpg_clusters[0]
            .metadata
            .owner_references
            .is_none()
    );
    assert!(
        children.rabbitmq_clusters[0]
            .metadata
            .owner_references
            .is_none()
    );
}
