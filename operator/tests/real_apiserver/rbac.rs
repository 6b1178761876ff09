//! The chart's ServiceAccount and RBAC, for real: the operator, authenticated with a token of
//! the chart's ServiceAccount, reconciles with no 403, in both chart modes (every namespace,
//! and `operator.watchNamespace`); SubjectAccessReviews list what it must never be able to do.

use std::time::Duration;

use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use kube::api::{ListParams, PostParams};
use kube::{Api, Client};
use paysys_testkit::envtest::ControlPlane;

use crate::support::{
    Env, Operator, apply_objects, apply_system, env, helm_template, wait_condition,
};

const TIMEOUT: Duration = Duration::from_secs(30);

/// Installs the chart's ServiceAccount and RBAC (release `release` in a new namespace) and
/// returns a client holding a token of that ServiceAccount.
async fn chart_operator_client(env: &Env, release: &str, watch: Option<&str>) -> Client {
    let cluster = ControlPlane::get().expect("env() already started it");
    let operator_namespace = cluster.namespace(&format!("{release}-op")).await;
    let watch_flag = format!("operator.watchNamespace={}", watch.unwrap_or(""));
    let objects = helm_template(
        release,
        &operator_namespace,
        &[
            "--show-only",
            "templates/serviceaccount.yaml",
            "--show-only",
            "templates/rbac.yaml",
            "--set",
            &watch_flag,
        ],
    );
    apply_objects(&env.client, &objects).await;
    let account = objects
        .iter()
        .find(|o| o["kind"] == "ServiceAccount")
        .and_then(|o| o["metadata"]["name"].as_str())
        .expect("the chart renders a ServiceAccount");
    cluster
        .service_account_client(&operator_namespace, account)
        .await
}

/// Whether the client may `verb` `resource` (in `namespace`; cluster-wide when `None`).
async fn can(
    client: &Client,
    verb: &str,
    group: &str,
    resource: &str,
    namespace: Option<&str>,
) -> bool {
    let review = SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                verb: Some(verb.into()),
                group: Some(group.into()),
                resource: Some(resource.into()),
                namespace: namespace.map(Into::into),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let answer = Api::<SelfSubjectAccessReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await
        .expect("a SelfSubjectAccessReview is always allowed");
    answer.status.expect("answered").allowed
}

/// What the operator must never be able to do, wherever it runs.
async fn assert_never_allowed(client: &Client, namespace: &str) {
    for (verb, group, resource, ns) in [
        ("create", "", "pods", Some(namespace)),
        ("delete", "", "pods", Some(namespace)),
        ("create", "", "pods/exec", Some(namespace)),
        ("list", "", "nodes", None),
        ("update", "apps", "deployments", Some(namespace)),
        ("update", "", "secrets", Some(namespace)),
        ("create", "", "serviceaccounts/token", Some(namespace)),
        ("update", "paysys.io", "paymentsystems", Some(namespace)),
        ("patch", "paysys.io", "paymentsystems", Some(namespace)),
        ("delete", "paysys.io", "paymentsystems", Some(namespace)),
        (
            "create",
            "apiextensions.k8s.io",
            "customresourcedefinitions",
            None,
        ),
        (
            "patch",
            "apiextensions.k8s.io",
            "customresourcedefinitions",
            None,
        ),
        (
            "delete",
            "apiextensions.k8s.io",
            "customresourcedefinitions",
            None,
        ),
        ("create", "rbac.authorization.k8s.io", "clusterroles", None),
        (
            "create",
            "rbac.authorization.k8s.io",
            "rolebindings",
            Some(namespace),
        ),
        (
            "escalate",
            "rbac.authorization.k8s.io",
            "roles",
            Some(namespace),
        ),
        ("bind", "rbac.authorization.k8s.io", "clusterroles", None),
        ("impersonate", "", "serviceaccounts", Some(namespace)),
        ("create", "", "namespaces", None),
        ("delete", "", "namespaces", None),
        (
            "patch",
            "coordination.k8s.io",
            "leases",
            Some("kube-system"),
        ),
    ] {
        assert!(
            !can(client, verb, group, resource, ns).await,
            "the operator may {verb} {group}/{resource} in {ns:?}"
        );
    }
}

/// Reconciles the minimal example as the chart's ServiceAccount: no 403 anywhere.
async fn reconciles_without_forbidden(env: &Env, client: Client) {
    let operator = Operator::start(client, &env.namespace);
    apply_system(
        env,
        include_str!("../../../examples/paymentsystem-minimal.yaml"),
    )
    .await;
    wait_condition(env, "shop", "Degraded", "False", TIMEOUT).await;
    let metrics = operator.metrics.encode();
    // A 403 would be the failure of one of the API steps (the step errors nested in operator/src/controller.rs `Error`).
    for reason in [
        "SecretReadFailed",
        "SecretCreateFailed",
        "ApplyFailed",
        "PruneFailed",
        "StatusWriteFailed",
    ] {
        assert!(!metrics.contains(reason), "{metrics}");
    }
}

#[tokio::test]
async fn the_chart_rbac_watching_every_namespace_suffices_and_grants_nothing_more() {
    let Some(env) = env("rbac-all").await else {
        return;
    };
    let client = chart_operator_client(&env, "rbac-all", None).await;
    // The cluster-wide watches of every kind it owns are allowed.
    for (group, resource) in [
        ("paysys.io", "paymentsystems"),
        ("apps", "deployments"),
        ("batch", "cronjobs"),
        ("", "services"),
        ("", "configmaps"),
        ("", "secrets"),
        ("", "persistentvolumeclaims"),
        ("policy", "poddisruptionbudgets"),
        ("networking.k8s.io", "networkpolicies"),
    ] {
        for verb in ["list", "watch"] {
            assert!(
                can(&client, verb, group, resource, None).await,
                "{verb} {resource}"
            );
        }
    }
    Api::<k8s_openapi::api::apps::v1::Deployment>::all(client.clone())
        .list(&ListParams::default().limit(1))
        .await
        .expect("a cluster-wide list as the chart's ServiceAccount");
    reconciles_without_forbidden(&env, client.clone()).await;
    assert_never_allowed(&client, &env.namespace).await;
    // The documented price of watching every namespace (docs/operator.md, "RBAC"): Secrets
    // everywhere are readable. operator.watchNamespace removes it (next test).
    assert!(can(&client, "get", "", "secrets", Some("kube-system")).await);
}

#[tokio::test]
async fn the_chart_rbac_with_watch_namespace_reaches_no_other_namespace() {
    let Some(env) = env("rbac-one").await else {
        return;
    };
    let client = chart_operator_client(&env, "rbac-one", Some(&env.namespace)).await;
    reconciles_without_forbidden(&env, client.clone()).await;
    assert_never_allowed(&client, &env.namespace).await;
    for (verb, group, resource) in [
        ("get", "", "secrets"),
        ("list", "", "secrets"),
        ("watch", "", "secrets"),
        ("list", "apps", "deployments"),
        ("patch", "apps", "deployments"),
        ("list", "paysys.io", "paymentsystems"),
    ] {
        for namespace in [Some("kube-system"), Some("default"), None] {
            assert!(
                !can(&client, verb, group, resource, namespace).await,
                "{verb} {resource} in {namespace:?} with watchNamespace set"
            );
        }
    }
}
