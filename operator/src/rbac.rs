//! Every Kubernetes permission the operator needs, in one place: [`required`].
//!
//! This list is the contract with the Helm chart (its ClusterRole is generated from
//! [`required_rules`], see [`crate::generate`], and compared against [`required`] by a test on
//! the chart side), and the operator's own mock-API-server tests check
//! every request it sends against it with [`allows`], so an API call added without its
//! permission fails a test here rather than with a 403 in a cluster.
//!
//! Notes on the verbs:
//! - `list` and `watch` back the controller's watches (its own resource and each child kind;
//!   Secrets and ConfigMaps are also watched so a change to a referenced Secret rolls the pods
//!   and a new model in a ConfigMap or Secret is rolled out; pods, so a refused model is
//!   reported).
//! - Secrets are a child kind (the risk models' copies); the same row covers the generated
//!   Secrets (created once, pruned when no longer wanted) and reading the referenced ones.
//! - Server-side apply is a `patch`; applying an object that does not exist yet also needs
//!   `create`.
//! - `delete` removes children that are no longer wanted (e.g. a dependency switched from
//!   `managed` to `external`, a PodDisruptionBudget after scaling down to one replica).
//! - Leases implement leader election (in the operator's own namespace); Events report
//!   failures on the `PaymentSystem` they concern.
//!
//! The child kinds' rows come from the one list of kinds ([`Children::kinds`]); only what is
//! not a child kind is written here.
//!
//! The operator watches every namespace, so the chart grants these through a ClusterRole.

use std::borrow::Cow;

use k8s_openapi::api::rbac::v1::PolicyRule;

use crate::build::Children;

/// One resource's grant; `group` `""` is the core group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Permission {
    pub group: Cow<'static, str>,
    pub resource: Cow<'static, str>,
    pub verbs: &'static [&'static str],
}

const READ: &[&str] = &["get", "list", "watch"];
/// The API group of the leader-election Lease (granted in the operator's namespace only).
pub const LEASE_GROUP: &str = "coordination.k8s.io";
/// What the operator does with each child kind: watch, apply (`create` + `patch`), prune.
pub const MANAGE: &[&str] = &["get", "list", "watch", "create", "patch", "delete"];

const fn row(
    group: &'static str,
    resource: &'static str,
    verbs: &'static [&'static str],
) -> Permission {
    Permission {
        group: Cow::Borrowed(group),
        resource: Cow::Borrowed(resource),
        verbs,
    }
}

/// The permissions that are not about a child kind.
const OWN: &[Permission] = &[
    row("paysys.io", "paymentsystems", READ),
    row("paysys.io", "paymentsystems/status", &["get", "patch"]),
    // The services' pods are watched (metadata) and the risk engine's listed, to see a pod
    // refusing a model on a claim; never written.
    row("", "pods", &["list", "watch"]),
    row("events.k8s.io", "events", &["create", "patch"]),
    row(LEASE_GROUP, "leases", &["get", "create", "patch"]),
];

/// The permissions the operator uses, one row per resource.
pub fn required() -> Vec<Permission> {
    let children = Children::kinds().into_iter().map(|kind| Permission {
        group: Cow::Owned(kind.group),
        resource: Cow::Owned(kind.plural),
        verbs: MANAGE,
    });
    OWN.iter().cloned().chain(children).collect()
}

/// [`required`] as RBAC rules, one per API group and identical verb set.
pub fn required_rules() -> Vec<PolicyRule> {
    let mut rules: Vec<PolicyRule> = Vec::new();
    for Permission {
        group,
        resource,
        verbs,
    } in required()
    {
        let verbs: Vec<String> = verbs.iter().map(|verb| verb.to_string()).collect();
        let same = rules.iter_mut().find(|rule| {
            rule.api_groups.as_deref() == Some(&[group.to_string()][..]) && rule.verbs == verbs
        });
        match same {
            Some(rule) => rule
                .resources
                .get_or_insert_with(Vec::new)
                .push(resource.to_string()),
            None => rules.push(PolicyRule {
                api_groups: Some(vec![group.to_string()]),
                resources: Some(vec![resource.to_string()]),
                verbs,
                ..PolicyRule::default()
            }),
        }
    }
    rules
}

/// Whether [`required`] grants `verb` on `resource` (with subresource, e.g.
/// `paymentsystems/status`) in `api_group`.
pub fn allows(api_group: &str, resource: &str, verb: &str) -> bool {
    required().iter().any(|permission| {
        permission.group == api_group
            && permission.resource == resource
            && permission.verbs.contains(&verb)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_group_resources_without_losing_any() {
        let rules = required_rules();
        let mut granted = Vec::new();
        for rule in &rules {
            for group in rule.api_groups.as_deref().unwrap_or_default() {
                for resource in rule.resources.as_deref().unwrap_or_default() {
                    for verb in &rule.verbs {
                        granted.push((group.clone(), resource.clone(), verb.clone()));
                    }
                }
            }
        }
        let expected: usize = required()
            .iter()
            .map(|permission| permission.verbs.len())
            .sum();
        assert_eq!(granted.len(), expected);
        for (group, resource, verb) in granted {
            assert!(
                allows(&group, &resource, &verb),
                "{group}/{resource} {verb}"
            );
        }
        assert!(
            rules.len() < required().len(),
            "rows sharing group and verbs merge"
        );
    }

    #[test]
    fn allows_only_what_is_listed() {
        assert!(allows("apps", "deployments", "patch"));
        assert!(!allows("apps", "deployments", "update"));
        assert!(!allows("", "pods", "get"));
        assert!(!allows("paysys.io", "paymentsystems", "patch"));
        assert!(allows("paysys.io", "paymentsystems/status", "patch"));
    }

    #[test]
    fn every_child_kind_is_managed_once() {
        let required = required();
        for kind in Children::kinds() {
            for verb in MANAGE {
                assert!(allows(&kind.group, &kind.plural, verb), "{kind:?} {verb}");
            }
        }
        let mut resources: Vec<_> = required
            .iter()
            .map(|permission| (&permission.group, &permission.resource))
            .collect();
        let rows = resources.len();
        resources.sort();
        resources.dedup();
        assert_eq!(resources.len(), rows, "one row per resource");
    }
}
