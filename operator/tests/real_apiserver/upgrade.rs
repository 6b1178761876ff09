//! Upgrading in place from the previous release (0.1.0): its CRD, a `PaymentSystem` it
//! accepted, and the objects its operator made (fixtures in `tests/fixtures/0.1.0/`); then
//! this release's CRD and operator.
//!
//! The managed servers of 0.1.0 kept their data in an emptyDir by default. The upgrade must
//! not replace their pods (that would lose every payment and queued message) nor give them an
//! empty claim: they keep running as they are, flagged (`Durable=False`,
//! `LegacyEphemeralStorage`, and a Warning Event), until the user chooses storage
//! (docs/production.md, "Upgrading from the emptyDir default").

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use paysys_operator::build::secrets;
use paysys_operator::crd::PaymentSystem;
use paysys_operator::names::FIELD_MANAGER;
use paysys_operator::observe;
use serde_json::{Value, json};

use crate::support::{
    DISRUPTION, Env, Operator, TEST_MANAGER, apply_system, condition, eventually, exclusive_env,
    shipped_crd, wait_condition,
};

const TIMEOUT: Duration = Duration::from_secs(30);
const OLD_CRD: &str = include_str!("../fixtures/0.1.0/paymentsystems.yaml");
const OLD_OBJECTS: &str = include_str!("../fixtures/0.1.0/managed-servers.yaml");
const SERVERS: [&str; 2] = ["shop-rabbitmq", "shop-postgresql"];

/// Installs `crd` and waits until the API server serves its schema: a probe resource keeps
/// `paymentsApi.autoscaling` (new schema) or has it pruned (old schema).
async fn install_crd(env: &Env, crd: &CustomResourceDefinition, knows_autoscaling: bool) {
    let crds: Api<CustomResourceDefinition> = Api::all(env.client.clone());
    crds.patch(
        crd.metadata.name.as_deref().unwrap(),
        &PatchParams::apply(TEST_MANAGER).force(),
        &Patch::Apply(crd),
    )
    .await
    .expect("the API server accepts the CRD");
    let systems: Api<PaymentSystem> = Api::namespaced(env.client.clone(), &env.namespace);
    eventually("the CRD's schema to be served", TIMEOUT, || async {
        let probe: PaymentSystem = serde_json::from_value(json!({
            "apiVersion": "paysys.io/v1alpha1",
            "kind": "PaymentSystem",
            "metadata": {"name": "schema-probe"},
            "spec": {"paymentsApi": {"autoscaling": {"maxReplicas": 2}}},
        }))
        .unwrap();
        let created = systems.create(&PostParams::default(), &probe).await.ok()?;
        let _ = systems
            .delete("schema-probe", &DeleteParams::default())
            .await;
        (created.spec.payments_api.autoscaling.is_some() == knows_autoscaling).then_some(())
    })
    .await;
}

/// The 0.1.0 objects for `ps`, as its operator applied them.
async fn old_objects(client: &Client, ps: &PaymentSystem) -> Vec<Value> {
    // The generated Secrets, created once as both releases do; the pods' config hash covers
    // the credentials in them, computed the same way by both releases.
    let secrets = observe::secrets::ensure_generated(client, ps, |generated| {
        secrets::generate(ps, generated)
    })
    .await
    .unwrap();
    let system = paysys_operator::validate::validate(ps, &secrets).unwrap();
    let built = paysys_operator::build::build(&system);
    let hashes: BTreeMap<String, String> = built
        .deployments
        .iter()
        .map(|deployment| {
            let annotations = deployment.spec.template.metadata.as_ref().unwrap();
            (
                deployment.name_any(),
                annotations.annotations.as_ref().unwrap()["paysys.io/config-hash"].clone(),
            )
        })
        .collect();
    use serde::Deserialize as _;
    serde_norway::Deserializer::from_str(OLD_OBJECTS)
        .map(|document| Value::deserialize(document).unwrap())
        .filter(|document| !document.is_null())
        .map(|document| {
            let name = document["metadata"]["name"].as_str().unwrap().to_owned();
            let text = serde_json::to_string(&document)
                .unwrap()
                .replace("NAMESPACE", ps.namespace().as_deref().unwrap())
                .replace("OWNER_UID", ps.uid().as_deref().unwrap())
                .replace("CONFIG_HASH", &hashes[&name]);
            serde_json::from_str(&text).unwrap()
        })
        .collect()
}

fn data_volume(deployment: &Deployment) -> k8s_openapi::api::core::v1::Volume {
    deployment
        .spec
        .template
        .spec
        .as_ref()
        .unwrap()
        .volumes
        .iter()
        .flatten()
        .find(|volume| volume.name == "data")
        .cloned()
        .unwrap()
}

#[tokio::test]
async fn a_system_of_the_previous_release_upgrades_in_place_and_keeps_its_data() {
    // The CRD is cluster-wide: no other test runs while the old one is installed.
    let _exclusive = DISRUPTION.write().await;
    let Some(env) = exclusive_env("upgrade").await else {
        return;
    };
    let old_crd: CustomResourceDefinition = serde_norway::from_str(OLD_CRD).unwrap();
    install_crd(&env, &old_crd, false).await;

    // 0.1.0: `spec: {}`, defaulted by the old schema, and its operator's objects.
    let ps = apply_system(
        &env,
        "apiVersion: paysys.io/v1alpha1\nkind: PaymentSystem\nmetadata:\n  name: shop\nspec: {}\n",
    )
    .await;
    assert_eq!(ps.spec.database.managed.as_ref().unwrap().storage, None);
    // Applied under the operator's field manager, so it owns exactly what 0.1.0's owned.
    let objects = old_objects(&env.client, &ps).await;
    let deployments: Api<Deployment> = Api::namespaced(env.client.clone(), &env.namespace);
    for object in &objects {
        let name = object["metadata"]["name"].as_str().unwrap();
        deployments
            .patch(
                name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(object),
            )
            .await
            .unwrap();
    }
    let mut before = BTreeMap::new();
    for name in SERVERS {
        let deployment = deployments.get(name).await.unwrap();
        assert!(data_volume(&deployment).empty_dir.is_some());
        before.insert(name, deployment);
    }

    // This release: new CRD, new operator.
    install_crd(&env, &shipped_crd(), true).await;
    let _operator = Operator::start(env.client.clone(), &env.namespace);
    let upgraded = wait_condition(&env, "shop", "Degraded", "False", TIMEOUT).await;

    // The servers' pods are not replaced: same template, same generation, still the emptyDir.
    for name in SERVERS {
        let after = deployments.get(name).await.unwrap();
        assert_eq!(
            after.metadata.generation, before[name].metadata.generation,
            "{name} was changed: its pod would be replaced and its data lost"
        );
        assert_eq!(after.spec.template, before[name].spec.template, "{name}");
        assert!(data_volume(&after).empty_dir.is_some(), "{name}");
    }
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(env.client.clone(), &env.namespace);
    assert!(
        claims
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty(),
        "no claim for a server that keeps its emptyDir"
    );
    // The rest of the system is there.
    deployments.get("shop-payments-api").await.unwrap();
    deployments.get("shop-risk-engine").await.unwrap();

    // Flagged in the status and by an Event.
    let durable = condition(&upgraded, "Durable").expect("a Durable condition");
    assert_eq!(durable.status, "False");
    assert_eq!(durable.reason, "LegacyEphemeralStorage");
    for name in SERVERS {
        assert!(durable.message.contains(name), "{}", durable.message);
    }
    assert!(durable.message.contains("docs/production.md"));
    let events: Api<Event> = Api::namespaced(env.client.clone(), &env.namespace);
    eventually(
        "a LegacyEphemeralStorage Warning Event",
        TIMEOUT,
        || async {
            let events = events.list(&ListParams::default()).await.ok()?;
            events
                .items
                .iter()
                .any(|event| {
                    event.reason.as_deref() == Some("LegacyEphemeralStorage")
                        && event.type_.as_deref() == Some("Warning")
                        && event.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("shop")
                })
                .then_some(())
        },
    )
    .await;

    // The documented way out: PostgreSQL onto a claim (after its backup), RabbitMQ
    // explicitly ephemeral (drained first).
    apply_system(
        &env,
        "apiVersion: paysys.io/v1alpha1\nkind: PaymentSystem\nmetadata:\n  name: shop\nspec:\n  database:\n    managed:\n      storage: {size: 2Gi}\n  rabbitmq:\n    managed:\n      storage: {ephemeral: true}\n",
    )
    .await;
    let chosen = wait_condition(&env, "shop", "Degraded", "False", TIMEOUT).await;
    let postgres = deployments.get("shop-postgresql").await.unwrap();
    assert_eq!(
        data_volume(&postgres)
            .persistent_volume_claim
            .unwrap()
            .claim_name,
        "shop-postgresql-data"
    );
    claims.get("shop-postgresql-data").await.unwrap();
    let durable = condition(&chosen, "Durable").unwrap();
    assert_eq!(
        (durable.status.as_str(), durable.reason.as_str()),
        ("False", "EphemeralStorage")
    );
    assert!(durable.message.contains("shop-rabbitmq"));
    assert!(!durable.message.contains("shop-postgresql"));
}
