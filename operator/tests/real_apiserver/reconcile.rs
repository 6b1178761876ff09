//! Reconciling on a real API server: the examples, status and printer columns, `Ready` both
//! ways, spec and content changes, server-side apply writing nothing when nothing changed
//! (also across restarts and an upgrade from what a previous release applied), drift,
//! deletion, pruning, and user Secrets left alone.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Pod, Secret, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Api, Resource, ResourceExt};
use paysys_operator::crd::PaymentSystem;
use paysys_operator::names::FIELD_MANAGER;
use paysys_testkit::envtest::kubelet::FakeKubelet;
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::support::{
    Env, Operator, apply_system, condition, delete_deployment_and_wait_restored, env, eventually,
    wait_condition,
};

const TIMEOUT: Duration = Duration::from_secs(30);
const MINIMAL: &str = include_str!("../../../examples/paymentsystem-minimal.yaml");
const FULL: &str = include_str!("../../../examples/paymentsystem-full.yaml");
const DEV: &str = include_str!("../../../examples/paymentsystem-dev.yaml");

const JWT_PUBLIC_KEY: &str = "-----BEGIN PUBLIC KEY-----
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEArQAhP5mKh8ZfP5cqtwiI
j8ThIMMSmVfrCA+ReTGm4dfXtftX7WrnggRMof1jjNDn1Io2UXViXCiLJ7E985PL
7ymXuP6bPjXVE//WoFTJsrEN+f3y9qNdQH/zfc1LwFHejRK50Rh1+KSN0XmjZXpp
V5WuROyYnfezx42DVpuI5fbVl8oPHcKKrbEiCbGW75PmvgfoPbkHIoN8tH+mjXUR
t74xxk1HQhYJ/jJMO36i+txG/Bd4Ull5MK/Z4/KjvoOy3ihS33QgFABrmXXr3x3/
9uaNA1X8RQiZ08tDWAOtndyJFQznpyGAqEri+miD7Nfwvkot41G+Y54XG/JzRz1V
lQIDAQAB
-----END PUBLIC KEY-----
";

/// Creates Secret `name` with string `data` as the test user.
pub async fn create_secret(env: &Env, name: &str, data: &[(&str, &str)]) -> Secret {
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        string_data: Some(
            data.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        ),
        ..Default::default()
    };
    Api::<Secret>::namespaced(env.client.clone(), &env.namespace)
        .create(&PostParams::default(), &secret)
        .await
        .unwrap_or_else(|e| panic!("create Secret {name}: {e}"))
}

/// The user Secrets `examples/paymentsystem-full.yaml` references.
async fn full_example_secrets(env: &Env) -> Vec<Secret> {
    vec![
        create_secret(
            env,
            "shop-auth",
            &[
                (
                    "api-keys",
                    "checkout=0123456789abcdef0123,backoffice=abcdef0123456789abcd",
                ),
                ("jwt-public-key.pem", JWT_PUBLIC_KEY),
            ],
        )
        .await,
        create_secret(
            env,
            "shop-broker",
            &[(
                "url",
                "amqps://paysys:secret@rabbitmq.example.com:5671/paysys",
            )],
        )
        .await,
        create_secret(
            env,
            "shop-feed",
            &[("fernet-key", "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=")],
        )
        .await,
    ]
}

/// `(kind, object metadata)` of every object of `kind` labelled as a child of `instance`.
async fn labelled<K>(env: &Env, instance: &str) -> Vec<(String, ObjectMeta)>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + std::fmt::Debug
        + DeserializeOwned,
{
    let api: Api<K> = Api::namespaced(env.client.clone(), &env.namespace);
    let selector = format!(
        "app.kubernetes.io/instance={instance},app.kubernetes.io/managed-by=paysys-operator"
    );
    api.list(&ListParams::default().labels(&selector))
        .await
        .unwrap()
        .into_iter()
        .map(|object| (K::kind(&()).into_owned(), object.meta().clone()))
        .collect()
}

/// Every child of `instance` the operator labels, of every kind it creates.
async fn children(env: &Env, instance: &str) -> Vec<(String, ObjectMeta)> {
    let mut all = labelled::<Deployment>(env, instance).await;
    all.extend(labelled::<Service>(env, instance).await);
    all.extend(labelled::<ConfigMap>(env, instance).await);
    all.extend(labelled::<Secret>(env, instance).await);
    all.extend(labelled::<PersistentVolumeClaim>(env, instance).await);
    all.extend(labelled::<PodDisruptionBudget>(env, instance).await);
    all.extend(labelled::<NetworkPolicy>(env, instance).await);
    all.extend(labelled::<HorizontalPodAutoscaler>(env, instance).await);
    all.extend(labelled::<CronJob>(env, instance).await);
    all
}

/// Kind -> names, for readable assertions.
fn by_kind(children: &[(String, ObjectMeta)]) -> BTreeMap<String, Vec<String>> {
    let mut map: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (kind, meta) in children {
        map.entry(kind.clone())
            .or_default()
            .push(meta.name.clone().unwrap());
    }
    map.values_mut().for_each(|names| names.sort());
    map
}

/// The printer columns of `name` as `kubectl get` shows them (the server computes them).
pub async fn printer_columns(env: &Env, name: &str) -> BTreeMap<String, serde_json::Value> {
    let request = http::Request::get(format!(
        "/apis/paysys.io/v1alpha1/namespaces/{}/paymentsystems/{name}",
        env.namespace
    ))
    .header("Accept", "application/json;as=Table;v=v1;g=meta.k8s.io")
    .body(Vec::new())
    .unwrap();
    let table: serde_json::Value = env.client.request(request).await.unwrap();
    let columns = table["columnDefinitions"].as_array().unwrap();
    let cells = table["rows"][0]["cells"].as_array().unwrap();
    columns
        .iter()
        .zip(cells)
        .map(|(column, cell)| (column["name"].as_str().unwrap().to_owned(), cell.clone()))
        .collect()
}

#[tokio::test]
async fn each_example_reconciles_to_all_its_children_with_owner_references_and_status() {
    for (example, expected, durable) in [
        (
            DEV,
            json!({
                "ConfigMap": ["shop-risk-rules"],
                "Deployment": ["shop-payments-api", "shop-postgresql", "shop-rabbitmq", "shop-risk-engine"],
                "NetworkPolicy": ["shop-payments-api", "shop-postgresql", "shop-rabbitmq", "shop-risk-engine"],
                "Secret": ["shop-api-key", "shop-postgresql-credentials", "shop-rabbitmq-credentials"],
                "Service": ["shop-payments-api", "shop-postgresql", "shop-rabbitmq"],
            }),
            ("False", "EphemeralStorage"),
        ),
        (
            MINIMAL,
            json!({
                "ConfigMap": ["shop-risk-rules"],
                "Deployment": ["shop-payments-api", "shop-postgresql", "shop-rabbitmq", "shop-risk-engine"],
                "NetworkPolicy": ["shop-payments-api", "shop-postgresql", "shop-rabbitmq", "shop-risk-engine"],
                "PersistentVolumeClaim": ["shop-postgresql-data", "shop-rabbitmq-data"],
                "PodDisruptionBudget": ["shop-payments-api"],
                "Secret": ["shop-api-key", "shop-postgresql-credentials", "shop-rabbitmq-credentials"],
                "Service": ["shop-payments-api", "shop-postgresql", "shop-rabbitmq"],
            }),
            ("True", "PersistentStorage"),
        ),
        (
            FULL,
            json!({
                "ConfigMap": ["shop-risk-rules"],
                "CronJob": ["shop-data-feed"],
                "Deployment": ["shop-payments-api", "shop-postgresql", "shop-risk-engine"],
                "HorizontalPodAutoscaler": ["shop-payments-api", "shop-risk-engine"],
                "NetworkPolicy": ["shop-payments-api", "shop-postgresql", "shop-risk-engine"],
                "PersistentVolumeClaim": ["shop-data-feed-data", "shop-postgresql-data"],
                "PodDisruptionBudget": ["shop-payments-api", "shop-risk-engine"],
                "Secret": ["shop-postgresql-credentials"],
                "Service": ["shop-payments-api", "shop-postgresql"],
            }),
            ("True", "PersistentStorage"),
        ),
    ] {
        // Each in a namespace of its own: both are named `shop`, and applying the full one
        // over the minimal one is refused (the defaulted `rabbitmq.managed` stays beside the
        // new `external`; see docs/operator.md).
        let Some(env) = env("example").await else {
            return;
        };
        let _operator = Operator::start(env.client.clone(), &env.namespace);
        full_example_secrets(&env).await;
        apply_system(&env, example).await;
        let ps = wait_condition(&env, "shop", "Degraded", "False", TIMEOUT).await;
        let uid = ps.uid().unwrap();
        let expected: BTreeMap<String, Vec<String>> = serde_json::from_value(expected).unwrap();
        let found = paysys_testkit::eventually(TIMEOUT, || async {
            let found = children(&env, "shop").await;
            (by_kind(&found) == expected).then_some(found)
        })
        .await;
        let found = match found {
            Some(found) => found,
            None => {
                let found = by_kind(&children(&env, "shop").await);
                panic!(
                    "children after {} s:\n{found:#?}\nexpected:\n{expected:#?}",
                    TIMEOUT.as_secs()
                )
            }
        };
        for (kind, meta) in &found {
            let owners = meta.owner_references.clone().unwrap_or_default();
            assert!(
                owners.iter().any(|o| o.uid == uid
                    && o.controller == Some(true)
                    && o.kind == "PaymentSystem"),
                "{kind} {:?} is not controlled by the PaymentSystem: {owners:?}",
                meta.name
            );
            let labels = meta.labels.clone().unwrap_or_default();
            for label in [
                "app.kubernetes.io/name",
                "app.kubernetes.io/component",
                "app.kubernetes.io/part-of",
            ] {
                assert!(
                    labels.contains_key(label),
                    "{kind} {:?} lacks {label}",
                    meta.name
                );
            }
        }

        let status = ps.status.clone().unwrap();
        assert_eq!(status.observed_generation, ps.metadata.generation);
        for kind in ["Ready", "Progressing", "Degraded", "Durable"] {
            let condition = condition(&ps, kind).unwrap_or_else(|| panic!("no {kind}"));
            assert_eq!(condition.observed_generation, ps.metadata.generation);
        }
        assert_eq!(condition(&ps, "Ready").unwrap().status, "False");
        let data = condition(&ps, "Durable").expect("a Durable condition");
        assert_eq!(
            (data.status.as_str(), data.reason.as_str()),
            durable,
            "{data:?}"
        );
        assert!(status.api_url.is_some());
        let columns = printer_columns(&env, "shop").await;
        assert_eq!(columns["Ready"], "False", "{columns:?}");
        assert_eq!(columns["API"], 0, "{columns:?}");
        assert_eq!(columns["Risk"], 0, "{columns:?}");
        assert_eq!(
            columns["Reason"],
            condition(&ps, "Ready").unwrap().reason.as_str(),
            "{columns:?}"
        );
    }
}

#[tokio::test]
async fn ready_is_false_without_running_pods_and_true_once_they_are_ready() {
    let Some(env) = env("ready").await else {
        return;
    };
    let _operator = Operator::start(env.client.clone(), &env.namespace);
    apply_system(&env, MINIMAL).await;
    let ps = wait_condition(&env, "shop", "Degraded", "False", TIMEOUT).await;
    // Pods exist (the controller manager made them) but nothing runs them.
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), &env.namespace);
    eventually("pods to be created", TIMEOUT, || async {
        (pods.list(&ListParams::default()).await.ok()?.items.len() >= 5).then_some(())
    })
    .await;
    let ps_now: Api<PaymentSystem> = Api::namespaced(env.client.clone(), &env.namespace);
    let ps_now = ps_now.get("shop").await.unwrap();
    assert_eq!(condition(&ps_now, "Ready").unwrap().status, "False");
    assert_eq!(ps.status.unwrap().payments_api.unwrap().ready_replicas, 0);

    let kubelet = FakeKubelet::start(env.client.clone(), &env.namespace)
        .await
        .unwrap();
    let ready = wait_condition(&env, "shop", "Ready", "True", TIMEOUT).await;
    let status = ready.status.unwrap();
    assert_eq!(status.payments_api.unwrap().ready_replicas, 2);
    assert_eq!(status.risk_engine.unwrap().ready_replicas, 1);
    let columns = printer_columns(&env, "shop").await;
    assert_eq!(columns["Ready"], "True", "{columns:?}");
    assert_eq!(columns["API"], 2, "{columns:?}");

    // The pods go away and nothing runs their replacements: Ready turns False again.
    drop(kubelet);
    pods.delete_collection(
        &DeleteParams::default().grace_period(0),
        &ListParams::default(),
    )
    .await
    .unwrap();
    wait_condition(&env, "shop", "Ready", "False", TIMEOUT).await;
}

/// The `paysys.io/config-hash` of Deployment `name`'s pod template.
async fn config_hash(env: &Env, name: &str) -> Option<String> {
    let deployment = Api::<Deployment>::namespaced(env.client.clone(), &env.namespace)
        .get(name)
        .await
        .ok()?;
    deployment
        .spec
        .template
        .metadata?
        .annotations?
        .get("paysys.io/config-hash")
        .cloned()
}

#[tokio::test]
async fn a_spec_change_updates_the_deployments_and_a_content_change_rolls_the_pods() {
    let Some(env) = env("changes").await else {
        return;
    };
    let _operator = Operator::start(env.client.clone(), &env.namespace);
    create_secret(
        &env,
        "shop-auth",
        &[("api-keys", "checkout=0123456789abcdef0123")],
    )
    .await;
    let system = |replicas: u32| {
        format!(
            "apiVersion: paysys.io/v1alpha1\nkind: PaymentSystem\nmetadata: {{name: shop}}\n\
             spec:\n  paymentsApi:\n    replicas: {replicas}\n    auth: {{secretName: shop-auth}}"
        )
    };
    apply_system(&env, &system(2)).await;
    wait_condition(&env, "shop", "Degraded", "False", TIMEOUT).await;
    let deployments: Api<Deployment> = Api::namespaced(env.client.clone(), &env.namespace);

    apply_system(&env, &system(4)).await;
    eventually("replicas 4 on the Deployment", TIMEOUT, || async {
        let deployment = deployments.get("shop-payments-api").await.ok()?;
        (deployment.spec.replicas == Some(4)).then_some(())
    })
    .await;

    // The user edits the Secret's content: the pod template changes, so the pods roll.
    let before = config_hash(&env, "shop-payments-api").await.unwrap();
    Api::<Secret>::namespaced(env.client.clone(), &env.namespace)
        .patch(
            "shop-auth",
            &PatchParams::default(),
            &Patch::Merge(json!({"stringData": {"api-keys": "checkout=fedcba9876543210fedc"}})),
        )
        .await
        .unwrap();
    eventually(
        "a new config hash after the Secret changed",
        TIMEOUT,
        || async {
            let after = config_hash(&env, "shop-payments-api").await?;
            (after != before).then_some(())
        },
    )
    .await;

    // A rules change (ConfigMap content) rolls the risk engine.
    let before = config_hash(&env, "shop-risk-engine").await.unwrap();
    let api: Api<PaymentSystem> = Api::namespaced(env.client.clone(), &env.namespace);
    api.patch(
        "shop",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"riskEngine": {"rules": {"declineThreshold": 55}}}})),
    )
    .await
    .unwrap();
    eventually("a new risk engine config hash", TIMEOUT, || async {
        let after = config_hash(&env, "shop-risk-engine").await?;
        (after != before).then_some(())
    })
    .await;
    let rules = Api::<ConfigMap>::namespaced(env.client.clone(), &env.namespace)
        .get("shop-risk-rules")
        .await
        .unwrap();
    let text: String = rules.data.unwrap().into_values().collect();
    assert!(text.contains("55"), "{text}");
}

/// The resourceVersion of every child of `instance` and of the `PaymentSystem`.
async fn versions(env: &Env, instance: &str) -> BTreeMap<String, String> {
    let mut versions: BTreeMap<String, String> = children(env, instance)
        .await
        .into_iter()
        .map(|(kind, meta)| {
            (
                format!("{kind}/{}", meta.name.unwrap()),
                meta.resource_version.unwrap(),
            )
        })
        .collect();
    let ps = Api::<PaymentSystem>::namespaced(env.client.clone(), &env.namespace)
        .get(instance)
        .await
        .unwrap();
    versions.insert("PaymentSystem".into(), ps.resource_version().unwrap());
    versions
}

/// The versions of `instance` and its children once two readings 2 s apart agree.
async fn settle(env: &Env, instance: &str) -> BTreeMap<String, String> {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    let mut previous = versions(env, instance).await;
    loop {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let now = versions(env, instance).await;
        if now == previous {
            return now;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{instance} never settled"
        );
        previous = now;
    }
}

#[tokio::test]
async fn reconciling_again_with_nothing_changed_writes_nothing_even_across_restarts() {
    let Some(env) = env("ssa").await else {
        return;
    };
    let operator = Operator::start(env.client.clone(), &env.namespace);
    apply_system(&env, MINIMAL).await;
    wait_condition(&env, "shop", "Degraded", "False", TIMEOUT).await;
    // Let the controller manager finish with the Deployments (their status changes
    // trigger reconciles of their own), then compare.
    let settled = settle(&env, "shop").await;
    let reconciles = operator.metrics.reconciliations.get();

    // A restarted operator (a new process, a new version) reconciles everything again.
    assert!(reconciles >= 1);
    restart_and_expect_no_writes(&env, operator, &settled).await;
}

/// Stops `operator`, starts a new one, lets it reconcile, and checks that `shop` and its
/// children still have the resourceVersions `settled`; returns the new operator.
async fn restart_and_expect_no_writes(
    env: &Env,
    operator: Operator,
    settled: &BTreeMap<String, String>,
) -> Operator {
    operator.stop().await;
    let restarted = Operator::start(env.client.clone(), &env.namespace);
    eventually("the restarted operator to reconcile", TIMEOUT, || async {
        (restarted.metrics.reconciliations.get() >= 1).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = versions(env, "shop").await;
    assert_eq!(
        &after, settled,
        "a reconcile with nothing changed wrote something"
    );
    restarted
}

/// A label the previous release set on its children and this one no longer does.
const PREVIOUS_LABEL: &str = "app.kubernetes.io/version";
/// An environment variable the previous release gave its containers and this one does not.
const PREVIOUS_ENV: &str = "PAYSYS_PREVIOUS_OPTION";

/// Server-side applies, as the previous release of the operator would have, every child of
/// kind `K` of `shop`: under the operator's field manager (its only one since its first
/// version), every field of the live object (an older release that set more fields
/// explicitly), plus [`PREVIOUS_LABEL`] and, in Deployments, [`PREVIOUS_ENV`].
async fn apply_as_previous_release<K>(env: &Env) -> usize
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + std::fmt::Debug
        + DeserializeOwned
        + serde::Serialize,
{
    let api: Api<K> = Api::namespaced(env.client.clone(), &env.namespace);
    let selector = "app.kubernetes.io/instance=shop,app.kubernetes.io/managed-by=paysys-operator";
    let objects = api
        .list(&ListParams::default().labels(selector))
        .await
        .unwrap();
    for object in &objects {
        let mut value = serde_json::to_value(object).unwrap();
        let body = value.as_object_mut().unwrap();
        body.remove("status");
        body.insert("apiVersion".into(), K::api_version(&()).into());
        body.insert("kind".into(), K::kind(&()).into());
        let meta = object.meta();
        let mut labels = meta.labels.clone().unwrap_or_default();
        labels.insert(PREVIOUS_LABEL.into(), "0.1.0".into());
        body.insert(
            "metadata".into(),
            json!({
                "name": meta.name,
                "labels": labels,
                "ownerReferences": meta.owner_references,
            }),
        );
        if K::kind(&()) == "Deployment" {
            let containers = value["spec"]["template"]["spec"]["containers"]
                .as_array_mut()
                .unwrap();
            for container in containers {
                if container["env"].is_null() {
                    container["env"] = json!([]);
                }
                let env = container["env"].as_array_mut().unwrap();
                env.push(json!({"name": PREVIOUS_ENV, "value": "1"}));
            }
        }
        let name = meta.name.clone().unwrap();
        api.patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&value),
        )
        .await
        .unwrap_or_else(|e| panic!("apply {} {name} as the previous release: {e}", K::kind(&())));
    }
    objects.items.len()
}

/// The managedFields entries of `meta` written by the operator's field manager.
fn operator_entries(meta: &ObjectMeta) -> Vec<(String, Option<String>)> {
    meta.managed_fields
        .iter()
        .flatten()
        .filter(|entry| entry.manager.as_deref() == Some(FIELD_MANAGER))
        .map(|entry| {
            (
                entry.operation.clone().unwrap_or_default(),
                entry.subresource.clone(),
            )
        })
        .collect()
}

#[tokio::test]
async fn an_upgrade_takes_over_what_the_previous_release_applied_without_conflict() {
    let Some(env) = env("upgrade").await else {
        return;
    };
    let previous = Operator::start(env.client.clone(), &env.namespace);
    apply_system(&env, MINIMAL).await;
    wait_condition(&env, "shop", "Degraded", "False", TIMEOUT).await;
    previous.stop().await;
    // Everything but the generated Secrets, which are created once and never applied.
    let applied = apply_as_previous_release::<Deployment>(&env).await
        + apply_as_previous_release::<Service>(&env).await
        + apply_as_previous_release::<ConfigMap>(&env).await
        + apply_as_previous_release::<PersistentVolumeClaim>(&env).await
        + apply_as_previous_release::<PodDisruptionBudget>(&env).await
        + apply_as_previous_release::<NetworkPolicy>(&env).await;
    let non_secret = |children: &[(String, ObjectMeta)]| -> Vec<(String, ObjectMeta)> {
        children
            .iter()
            .filter(|(kind, _)| kind != "Secret")
            .cloned()
            .collect()
    };
    let before = non_secret(&children(&env, "shop").await);
    assert_eq!(applied, before.len());
    assert!(
        before
            .iter()
            .all(|(_, meta)| { meta.labels.as_ref().unwrap().contains_key(PREVIOUS_LABEL) })
    );

    // The upgrade: the current operator takes every child over.
    let current = Operator::start(env.client.clone(), &env.namespace);
    let after = eventually("the previous release's label gone", TIMEOUT, || async {
        let children = non_secret(&children(&env, "shop").await);
        let gone = children
            .iter()
            .all(|(_, meta)| !meta.labels.as_ref().unwrap().contains_key(PREVIOUS_LABEL));
        gone.then_some(children)
    })
    .await;
    wait_condition(&env, "shop", "Degraded", "False", TIMEOUT).await;
    // No reconcile failed (a conflict would have): no failure series at all.
    let metrics = current.metrics.encode();
    let failures: Vec<&str> = metrics
        .lines()
        .filter(|line| line.starts_with("paysys_operator_reconcile_failures_total{"))
        .collect();
    assert!(failures.is_empty(), "{failures:?}");
    assert_eq!(after.len(), before.len(), "{:?}", by_kind(&after));
    for (kind, meta) in &after {
        // One owner of the operator's fields: its Apply entry, no second entry beside it.
        assert_eq!(
            operator_entries(meta),
            [("Apply".to_owned(), None)],
            "{kind} {:?}",
            meta.name
        );
    }
    // What the previous release set and this one does not is gone, lists included.
    let deployments: Api<Deployment> = Api::namespaced(env.client.clone(), &env.namespace);
    for deployment in deployments
        .list(&ListParams::default().labels("app.kubernetes.io/instance=shop"))
        .await
        .unwrap()
    {
        let containers = deployment.spec.template.spec.unwrap().containers;
        for container in containers {
            assert!(
                !container
                    .env
                    .iter()
                    .flatten()
                    .any(|var| var.name == PREVIOUS_ENV),
                "{} still has {PREVIOUS_ENV}",
                container.name
            );
        }
    }

    // And a second pass writes nothing.
    let settled = settle(&env, "shop").await;
    restart_and_expect_no_writes(&env, current, &settled).await;
}

#[tokio::test]
async fn a_deleted_or_hand_edited_child_is_restored() {
    let Some(env) = env("drift").await else {
        return;
    };
    let _operator = Operator::start(env.client.clone(), &env.namespace);
    apply_system(&env, MINIMAL).await;
    wait_condition(&env, "shop", "Degraded", "False", TIMEOUT).await;
    let deployments: Api<Deployment> = Api::namespaced(env.client.clone(), &env.namespace);

    delete_deployment_and_wait_restored(&env, "shop-risk-engine", TIMEOUT).await;

    // A hand edit of a field the operator owns (a `kubectl edit`, another field manager).
    deployments
        .patch(
            "shop-payments-api",
            &PatchParams::apply("someone-else").force(),
            &Patch::Apply(json!({
                "apiVersion": "apps/v1", "kind": "Deployment",
                "spec": {"replicas": 7},
            })),
        )
        .await
        .unwrap();
    // And a hand edit of content the operator renders (the risk rules).
    let config_maps: Api<ConfigMap> = Api::namespaced(env.client.clone(), &env.namespace);
    let rules = config_maps
        .get("shop-risk-rules")
        .await
        .unwrap()
        .data
        .unwrap();
    config_maps
        .patch(
            "shop-risk-rules",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": rules.keys().map(|k| (k.clone(), "tampered")).collect::<BTreeMap<_, _>>()})),
        )
        .await
        .unwrap();
    eventually("the hand edits reverted", TIMEOUT, || async {
        let deployment = deployments.get("shop-payments-api").await.ok()?;
        let now = config_maps.get("shop-risk-rules").await.ok()?.data?;
        (deployment.spec.replicas == Some(2) && now == rules).then_some(())
    })
    .await;
}

#[tokio::test]
async fn deleting_the_system_collects_every_child_and_leaves_user_secrets_alone() {
    let Some(env) = env("delete").await else {
        return;
    };
    let _operator = Operator::start(env.client.clone(), &env.namespace);
    let user = full_example_secrets(&env).await;
    apply_system(&env, FULL).await;
    wait_condition(&env, "shop", "Degraded", "False", TIMEOUT).await;
    let secrets: Api<Secret> = Api::namespaced(env.client.clone(), &env.namespace);
    // Referenced, read, never written: same resourceVersion, no owner, no operator field.
    for before in &user {
        let now = secrets.get(&before.name_any()).await.unwrap();
        assert_eq!(now.resource_version(), before.resource_version());
        assert!(now.owner_references().is_empty());
        let managers: Vec<_> = now
            .managed_fields()
            .iter()
            .filter_map(|f| f.manager.clone())
            .collect();
        assert!(
            !managers.iter().any(|m| m.starts_with("paysys-operator")),
            "{managers:?}"
        );
    }

    let api: Api<PaymentSystem> = Api::namespaced(env.client.clone(), &env.namespace);
    api.delete("shop", &DeleteParams::foreground())
        .await
        .unwrap();
    eventually(
        "the PaymentSystem gone (no finalizer hangs)",
        TIMEOUT,
        || async { api.get_opt("shop").await.ok()?.is_none().then_some(()) },
    )
    .await;
    eventually("every child collected", TIMEOUT, || async {
        children(&env, "shop").await.is_empty().then_some(())
    })
    .await;
    for before in &user {
        let now = secrets.get(&before.name_any()).await.unwrap();
        assert_eq!(now.resource_version(), before.resource_version());
    }
}
#[tokio::test]
async fn children_no_longer_wanted_are_pruned_by_ownership_and_label() {
    let Some(env) = env("prune").await else {
        return;
    };
    let _operator = Operator::start(env.client.clone(), &env.namespace);
    create_secret(
        &env,
        "shop-broker",
        &[(
            "url",
            "amqp://paysys:secret@rabbitmq.example.com:5672/paysys",
        )],
    )
    .await;
    apply_system(&env, MINIMAL).await;
    wait_condition(&env, "shop", "Degraded", "False", TIMEOUT).await;
    // A child the operator made in an earlier version under a name this version never
    // builds: found by owner and label, so it is pruned too.
    let ps = Api::<PaymentSystem>::namespaced(env.client.clone(), &env.namespace)
        .get("shop")
        .await
        .unwrap();
    let mut stray: ConfigMap = serde_json::from_value(json!({
        "metadata": {
            "name": "shop-legacy-settings",
            "labels": {
                "app.kubernetes.io/instance": "shop",
                "app.kubernetes.io/managed-by": "paysys-operator",
                "app.kubernetes.io/name": "risk-engine",
            },
        },
    }))
    .unwrap();
    stray.metadata.owner_references = Some(vec![ps.controller_owner_ref(&()).unwrap()]);
    let config_maps: Api<ConfigMap> = Api::namespaced(env.client.clone(), &env.namespace);
    config_maps
        .create(&PostParams::default(), &stray)
        .await
        .unwrap();
    // Someone else's ConfigMap with the same labels but no owner reference stays.
    let mut foreign = stray.clone();
    foreign.metadata.name = Some("shop-not-ours".into());
    foreign.metadata.owner_references = None;
    config_maps
        .create(&PostParams::default(), &foreign)
        .await
        .unwrap();

    // The broker becomes external: its Deployment, Service, claim, NetworkPolicy and
    // credentials are no longer wanted.
    // (`managed: null`: the server defaulted `managed: {}` in, and the rule wants one of the
    // two, so the switch has to remove it; a server-side apply of `external` alone cannot.)
    Api::<PaymentSystem>::namespaced(env.client.clone(), &env.namespace)
        .patch(
            "shop",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"rabbitmq": {
                "managed": null,
                "external": {"secretName": "shop-broker"},
            }}})),
        )
        .await
        .unwrap();
    wait_condition(&env, "shop", "Degraded", "False", TIMEOUT).await;
    let found = eventually("the broker's children pruned", TIMEOUT, || async {
        let found = by_kind(&children(&env, "shop").await);
        let any_broker = found
            .values()
            .flatten()
            .any(|name| name.contains("rabbitmq") || name == "shop-legacy-settings");
        (!any_broker).then_some(found)
    })
    .await;
    assert!(found["Deployment"].contains(&"shop-postgresql".to_owned()));
    assert!(found["Secret"].contains(&"shop-api-key".to_owned()));
    config_maps.get("shop-not-ours").await.unwrap();
    let user = Api::<Secret>::namespaced(env.client.clone(), &env.namespace)
        .get("shop-broker")
        .await;
    assert!(user.is_ok(), "the user's Secret was deleted");
}
