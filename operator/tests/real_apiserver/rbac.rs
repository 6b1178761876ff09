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

/// Whether `user` may `verb` PaymentSystems (or `subresource` of them) in `namespace`, as
/// the API server's authorizer answers a SubjectAccessReview.
async fn user_can(
    admin: &Client,
    user: &str,
    verb: &str,
    subresource: Option<&str>,
    namespace: &str,
) -> bool {
    use k8s_openapi::api::authorization::v1::{SubjectAccessReview, SubjectAccessReviewSpec};
    let review = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some(user.into()),
            groups: Some(vec!["system:authenticated".into()]),
            resource_attributes: Some(ResourceAttributes {
                verb: Some(verb.into()),
                group: Some("paysys.io".into()),
                resource: Some("paymentsystems".into()),
                subresource: subresource.map(Into::into),
                namespace: Some(namespace.into()),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    Api::<SubjectAccessReview>::all(admin.clone())
        .create(&PostParams::default(), &review)
        .await
        .expect("the admin may review access")
        .status
        .expect("answered")
        .allowed
}

/// Binds `user` to the built-in ClusterRole `role` in `namespace`.
async fn bind(admin: &Client, namespace: &str, user: &str, role: &str) {
    let binding = serde_json::json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": format!("{user}-{role}"), "namespace": namespace},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
    });
    apply_objects(admin, &[binding]).await;
}

/// The chart's aggregated ClusterRoles, through the cluster's aggregation controller and the
/// RBAC authorizer: a user bound to the built-in `view` in a namespace may read its
/// PaymentSystems and change nothing; one bound to `edit` may change them, not their status;
/// neither reaches another namespace. Before the chart's roles exist, `view` grants nothing
/// on PaymentSystems (so the check can fail). Alone: another test's chart release (helm.rs)
/// would add its own aggregated roles meanwhile.
#[tokio::test]
async fn users_bound_to_view_or_edit_read_or_change_payment_systems() {
    use k8s_openapi::api::rbac::v1::ClusterRole;
    let _alone = crate::support::DISRUPTION.write().await;
    let Some(env) = crate::support::exclusive_env("rbac-users").await else {
        return;
    };
    let admin = &env.client;
    let ns = env.namespace.as_str();
    // Users of this test only: the namespace name is unique.
    let viewer = format!("{ns}-viewer");
    let editor = format!("{ns}-editor");
    bind(admin, ns, &viewer, "view").await;
    bind(admin, ns, &editor, "edit").await;
    assert!(
        !user_can(admin, &viewer, "get", None, ns).await,
        "view reads PaymentSystems before the chart's roles exist"
    );

    let release = format!("agg-{}", &ns[ns.len().saturating_sub(8)..]);
    let roles = helm_template(
        &release,
        ns,
        &["--show-only", "templates/aggregated-roles.yaml"],
    );
    assert_eq!(roles.len(), 2, "the view and edit roles");
    apply_objects(admin, &roles).await;

    // The aggregation controller folds each labelled role into view and edit in its own
    // update (edit takes the view role's rules too), so wait for every grant checked below,
    // not one of each: edit could already patch and not yet get.
    crate::support::eventually(
        "the aggregation controller to add PaymentSystems to view and edit",
        TIMEOUT,
        || async {
            for verb in ["get", "list", "watch"] {
                if !(user_can(admin, &viewer, verb, None, ns).await
                    && user_can(admin, &editor, verb, None, ns).await
                    && user_can(admin, &viewer, verb, Some("status"), ns).await)
                {
                    return None;
                }
            }
            for verb in ["create", "update", "patch", "delete", "deletecollection"] {
                if !user_can(admin, &editor, verb, None, ns).await {
                    return None;
                }
            }
            Some(())
        },
    )
    .await;
    for verb in ["get", "list", "watch"] {
        assert!(
            user_can(admin, &viewer, verb, None, ns).await,
            "view {verb}"
        );
        assert!(
            user_can(admin, &editor, verb, None, ns).await,
            "edit {verb}"
        );
        assert!(
            user_can(admin, &viewer, verb, Some("status"), ns).await,
            "view {verb} status"
        );
    }
    for verb in ["create", "update", "patch", "delete", "deletecollection"] {
        assert!(
            !user_can(admin, &viewer, verb, None, ns).await,
            "view may {verb}"
        );
        assert!(
            user_can(admin, &editor, verb, None, ns).await,
            "edit may not {verb}"
        );
        for user in [&viewer, &editor] {
            assert!(
                !user_can(admin, user, verb, Some("status"), ns).await,
                "{user} may {verb} the status"
            );
        }
    }
    for user in [&viewer, &editor] {
        assert!(
            !user_can(admin, user, "get", None, "default").await,
            "{user} reaches another namespace"
        );
    }

    let cluster_roles: Api<ClusterRole> = Api::all(admin.clone());
    for role in &roles {
        let name = role["metadata"]["name"].as_str().unwrap();
        cluster_roles
            .delete(name, &Default::default())
            .await
            .unwrap_or_else(|e| panic!("delete ClusterRole {name}: {e}"));
    }
}
