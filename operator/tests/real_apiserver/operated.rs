//! Dependencies handed to other operators, on a real API server with their real CRDs
//! (`tests/fixtures/foreign-crds`): a CloudNativePG `Cluster` and a `RabbitmqCluster` are
//! created, wired and watched; their status (patched here the way their operators write it)
//! drives `Ready`; `deletionPolicy` decides whether deleting the `PaymentSystem` deletes them;
//! and without their CRDs the system is `Degraded` (`CrdMissing`) until they are installed,
//! while other systems carry on.

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{EnvVar, PersistentVolumeClaim, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use paysys_operator::crd::PaymentSystem;
use paysys_operator::foreign::cnpg::Cluster;
use paysys_operator::foreign::rabbitmq::RabbitmqCluster;
use serde_json::json;

use crate::support::{
    DISRUPTION, Env, Operator, TEST_MANAGER, apply_system, condition, env, eventually,
    exclusive_env, wait_condition,
};

const TIMEOUT: Duration = Duration::from_secs(30);
const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/foreign-crds");
const CRD_FILES: [&str; 2] = [
    "postgresql.cnpg.io_clusters.yaml",
    "rabbitmq.com_rabbitmqclusters.yaml",
];

fn fixture(file: &str) -> CustomResourceDefinition {
    let text = std::fs::read_to_string(format!("{FIXTURES}/{file}")).expect("read fixture");
    serde_norway::from_str(&text).expect("the fixture is a CRD")
}

/// Installs the upstream CRDs (idempotent) and waits until they are served.
async fn install_foreign_crds(client: &Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for file in CRD_FILES {
        let crd = fixture(file);
        let name = crd.name_any();
        crds.patch(
            &name,
            &PatchParams::apply(TEST_MANAGER).force(),
            &Patch::Apply(&crd),
        )
        .await
        .unwrap_or_else(|e| panic!("the API server accepts {file}: {e}"));
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
}

/// Deletes the upstream CRDs if present and waits until they are gone.
async fn remove_foreign_crds(client: &Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for file in CRD_FILES {
        let name = fixture(file).name_any();
        let _ = crds.delete(&name, &DeleteParams::default()).await;
        eventually(
            &format!("{name} to be deleted"),
            Duration::from_secs(60),
            || async { matches!(crds.get_opt(&name).await, Ok(None)).then_some(()) },
        )
        .await;
    }
}

const OPERATED: &str = "
apiVersion: paysys.io/v1alpha1
kind: PaymentSystem
metadata: {name: shop}
spec:
  database:
    cloudNativePG: {instances: 3, storage: {size: 5Gi, storageClassName: fast}}
  rabbitmq:
    clusterOperator: {replicas: 3, deletionPolicy: Delete}
";

fn env_var<'a>(deployment: &'a Deployment, name: &str) -> &'a EnvVar {
    deployment.spec.template.spec.as_ref().unwrap().containers[0]
        .env
        .iter()
        .flatten()
        .find(|var| var.name == name)
        .unwrap_or_else(|| panic!("{} has no {name}", deployment.name_any()))
}

fn secret_ref(var: &EnvVar) -> (String, String) {
    let selector = var
        .value_from
        .as_ref()
        .and_then(|from| from.secret_key_ref.as_ref())
        .unwrap_or_else(|| panic!("{} is not from a Secret", var.name));
    (selector.name.clone(), selector.key.clone())
}

fn ready_message(ps: &PaymentSystem) -> String {
    condition(ps, "Ready")
        .map(|c| c.message.clone())
        .unwrap_or_default()
}

#[tokio::test]
async fn operated_clusters_are_created_wired_watched_and_kept_by_default() {
    let Some(env) = env("operated-clusters").await else {
        return;
    };
    install_foreign_crds(&env.client).await;
    let _operator = Operator::start(env.client.clone(), &env.namespace);
    apply_system(&env, OPERATED).await;
    let ps = wait_condition(&env, "shop", "Degraded", "False", TIMEOUT).await;

    // The resources, as their CRDs accepted them.
    let clusters: Api<Cluster> = Api::namespaced(env.client.clone(), &env.namespace);
    let rabbits: Api<RabbitmqCluster> = Api::namespaced(env.client.clone(), &env.namespace);
    let cluster = clusters.get("shop-pg").await.expect("Cluster shop-pg");
    assert_eq!(cluster.spec.instances, 3);
    assert_eq!(cluster.spec.storage.size, "5Gi");
    assert_eq!(cluster.spec.storage.storage_class.as_deref(), Some("fast"));
    assert!(
        cluster.owner_references().is_empty(),
        "deletionPolicy Retain (the default): no owner, so the data outlives the PaymentSystem"
    );
    assert_eq!(cluster.labels()["app.kubernetes.io/instance"], "shop");
    let rabbit = rabbits
        .get("shop-mq")
        .await
        .expect("RabbitmqCluster shop-mq");
    assert_eq!(rabbit.spec.replicas, 3);
    assert_eq!(rabbit.spec.persistence.storage, "10Gi");
    assert_eq!(
        rabbit.owner_references()[0].uid,
        ps.uid().unwrap(),
        "deletionPolicy Delete: owned"
    );

    // Wiring: the API to CloudNativePG's app Secret, both services to the default user's.
    let deployments: Api<Deployment> = Api::namespaced(env.client.clone(), &env.namespace);
    let api = deployments.get("shop-payments-api").await.unwrap();
    assert_eq!(
        secret_ref(env_var(&api, "DATABASE_URL")),
        ("shop-pg-app".into(), "uri".into())
    );
    for deployment in [api, deployments.get("shop-risk-engine").await.unwrap()] {
        let raw = env_var(&deployment, "PAYSYS_AMQP_URL_CONNECTION_STRING");
        assert_eq!(
            secret_ref(raw),
            ("shop-mq-default-user".into(), "connection_string".into())
        );
        assert_eq!(
            env_var(&deployment, "AMQP_URL").value.as_deref(),
            Some("$(PAYSYS_AMQP_URL_CONNECTION_STRING)%2f"),
            "the default vhost, which the connection string leaves empty"
        );
    }
    // Nothing of the managed servers.
    for name in ["shop-postgresql", "shop-rabbitmq"] {
        assert!(deployments.get_opt(name).await.unwrap().is_none(), "{name}");
    }
    let secrets: Api<Secret> = Api::namespaced(env.client.clone(), &env.namespace);
    assert!(
        secrets
            .get_opt("shop-postgresql-credentials")
            .await
            .unwrap()
            .is_none()
    );
    // Nor their claims: the managed-server storage default does not apply to operated
    // clusters, whose operators claim their own volumes; `Durable` says so by name.
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(env.client.clone(), &env.namespace);
    for name in ["shop-postgresql-data", "shop-rabbitmq-data"] {
        assert!(claims.get_opt(name).await.unwrap().is_none(), "{name}");
    }
    let durable = condition(&ps, "Durable").expect("Durable condition");
    assert_eq!(
        (durable.status.as_str(), durable.reason.as_str()),
        ("True", "PersistentStorage")
    );
    for object in ["RabbitmqCluster shop-mq", "Cluster shop-pg"] {
        assert!(durable.message.contains(object), "{}", durable.message);
    }

    // Not ready while their operators have said nothing.
    let message = ready_message(&ps);
    assert!(message.contains("Cluster shop-pg"), "{message}");
    assert!(message.contains("RabbitmqCluster shop-mq"), "{message}");

    // CloudNativePG reports a healthy cluster; the Cluster Operator all replicas ready.
    let now = "2026-01-01T00:00:00Z";
    clusters
        .patch_status(
            "shop-pg",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {
                "phase": "Cluster in healthy state",
                "instances": 3,
                "readyInstances": 3,
                "conditions": [{"type": "Ready", "status": "True", "reason": "ClusterIsReady",
                                "message": "Cluster is Ready", "lastTransitionTime": now}],
            }})),
        )
        .await
        .expect("patch the Cluster's status as CloudNativePG would");
    rabbits
        .patch_status(
            "shop-mq",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"conditions": [
                {"type": "AllReplicasReady", "status": "True", "reason": "AllPodsAreReady", "lastTransitionTime": now},
                {"type": "ReconcileSuccess", "status": "True", "reason": "Success", "lastTransitionTime": now},
            ]}})),
        )
        .await
        .expect("patch the RabbitmqCluster's status as its operator would");
    // The watch of each (by instance label, owned or not) reconciles the system.
    let api: Api<PaymentSystem> = Api::namespaced(env.client.clone(), &env.namespace);
    let ps = eventually("the clusters to count as ready", TIMEOUT, || async {
        let ps = api.get("shop").await.ok()?;
        let status = ps.status.clone()?;
        let database = status.database?;
        let rabbitmq = status.rabbitmq?;
        (database.ready_replicas == 3 && rabbitmq.ready_replicas == 3).then_some(ps)
    })
    .await;
    let message = ready_message(&ps);
    assert!(!message.contains("shop-pg"), "{message}");
    assert!(!message.contains("shop-mq"), "{message}");
    assert_eq!(
        ps.status
            .as_ref()
            .unwrap()
            .database
            .as_ref()
            .unwrap()
            .desired_replicas,
        3
    );

    // The Cluster Operator failing to apply the spec is not ready, and says why.
    rabbits
        .patch_status(
            "shop-mq",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"conditions": [
                {"type": "AllReplicasReady", "status": "True", "lastTransitionTime": now},
                {"type": "ReconcileSuccess", "status": "False", "reason": "FailedCreateOrUpdate",
                 "message": "quota exceeded", "lastTransitionTime": now},
            ]}})),
        )
        .await
        .unwrap();
    eventually(
        "ReconcileSuccess=False in Ready's message",
        TIMEOUT,
        || async {
            let ps = api.get("shop").await.ok()?;
            ready_message(&ps)
                .contains("ReconcileSuccess is False: quota exceeded")
                .then_some(())
        },
    )
    .await;

    // Deleting the PaymentSystem: the owned RabbitmqCluster goes with it, the Cluster stays.
    api.delete("shop", &DeleteParams::foreground())
        .await
        .unwrap();
    eventually(
        "the PaymentSystem and its RabbitmqCluster to be deleted",
        Duration::from_secs(60),
        || async {
            let gone = api.get_opt("shop").await.ok()?.is_none()
                && rabbits.get_opt("shop-mq").await.ok()?.is_none();
            gone.then_some(())
        },
    )
    .await;
    assert!(
        clusters.get_opt("shop-pg").await.unwrap().is_some(),
        "the database Cluster (Retain) survives its PaymentSystem"
    );
    // Recreated under the same name, the system takes the retained Cluster back.
    apply_system(&env, OPERATED).await;
    wait_condition(&env, "shop", "Degraded", "False", TIMEOUT).await;
    let cluster = clusters.get("shop-pg").await.unwrap();
    assert_eq!(cluster.spec.instances, 3);
    assert!(
        cluster
            .metadata
            .managed_fields
            .iter()
            .flatten()
            .any(|fields| fields.manager.as_deref() == Some("paysys-operator")),
        "applied again by the operator"
    );
}

#[tokio::test]
async fn the_production_example_is_admitted_and_creates_both_clusters() {
    let Some(env) = env("operated-example").await else {
        return;
    };
    install_foreign_crds(&env.client).await;
    let _operator = Operator::start(env.client.clone(), &env.namespace);
    apply_system(
        &env,
        include_str!("../../../examples/paymentsystem-production.yaml"),
    )
    .await;
    wait_condition(&env, "shop", "Degraded", "False", TIMEOUT).await;
    let clusters: Api<Cluster> = Api::namespaced(env.client.clone(), &env.namespace);
    let rabbits: Api<RabbitmqCluster> = Api::namespaced(env.client.clone(), &env.namespace);
    assert_eq!(
        clusters.get("shop-pg").await.unwrap().spec.storage.size,
        "50Gi"
    );
    assert_eq!(
        rabbits
            .get("shop-mq")
            .await
            .unwrap()
            .spec
            .persistence
            .storage,
        "20Gi"
    );
}

/// Runs alone (it removes CRDs every other test could use).
#[tokio::test]
async fn a_missing_crd_degrades_only_its_system_until_it_is_installed() {
    let _alone = DISRUPTION.write().await;
    let Some(env) = exclusive_env("operated-missing-crd").await else {
        return;
    };
    run_missing_crd(&env).await;
}

async fn run_missing_crd(env: &Env) {
    remove_foreign_crds(&env.client).await;
    let operator = Operator::start(env.client.clone(), &env.namespace);
    apply_system(env, OPERATED).await;
    apply_system(
        env,
        "apiVersion: paysys.io/v1alpha1\nkind: PaymentSystem\nmetadata: {name: plain}\nspec: {}\n",
    )
    .await;
    let ps = wait_condition(env, "shop", "Degraded", "True", TIMEOUT).await;
    let degraded = condition(&ps, "Degraded").unwrap();
    assert_eq!(degraded.reason, "CrdMissing");
    for expected in [
        "clusters.postgresql.cnpg.io",
        "CloudNativePG",
        "rabbitmqclusters.rabbitmq.com",
        "RabbitMQ Cluster Operator",
        "kubectl apply",
    ] {
        assert!(
            degraded.message.contains(expected),
            "{expected}: {}",
            degraded.message
        );
    }
    // Nothing of it was applied: no pods pointing at Secrets nobody will create.
    let deployments: Api<Deployment> = Api::namespaced(env.client.clone(), &env.namespace);
    assert!(
        deployments
            .get_opt("shop-payments-api")
            .await
            .unwrap()
            .is_none()
    );
    // The other system is reconciled as usual.
    wait_condition(env, "plain", "Degraded", "False", TIMEOUT).await;
    assert!(
        deployments
            .get_opt("plain-payments-api")
            .await
            .unwrap()
            .is_some()
    );
    let metrics = operator.metrics.encode();
    assert!(
        metrics.contains("paysys_operator_reconcile_failures_total{reason=\"CrdMissing\"}"),
        "{metrics}"
    );

    // Installing the operators' CRDs is enough: the retry (with backoff) proceeds.
    install_foreign_crds(&env.client).await;
    wait_condition(env, "shop", "Degraded", "False", Duration::from_secs(60)).await;
    let clusters: Api<Cluster> = Api::namespaced(env.client.clone(), &env.namespace);
    assert!(clusters.get_opt("shop-pg").await.unwrap().is_some());
    assert!(
        deployments
            .get_opt("shop-payments-api")
            .await
            .unwrap()
            .is_some()
    );

    // The foreign watch started once the CRD appeared: a change to the Cluster reconciles.
    clusters
        .patch(
            "shop-pg",
            &PatchParams::apply("someone-else").force(),
            &Patch::Apply(json!({
                "apiVersion": "postgresql.cnpg.io/v1", "kind": "Cluster",
                "metadata": {"name": "shop-pg"}, "spec": {"instances": 1}
            })),
        )
        .await
        .unwrap();
    eventually("the operator to put instances back", TIMEOUT, || async {
        let cluster = clusters.get("shop-pg").await.ok()?;
        (cluster.spec.instances == 3).then_some(())
    })
    .await;
    operator.stop().await;
}
