//! Every Kubernetes permission the operator needs, in one place.
//!
//! This list is the contract with the Helm chart (its ClusterRole is compared against
//! [`REQUIRED`] by a test on the chart side), and the operator's own mock-API-server tests check
//! every request it sends against it with [`allows`], so an API call added without its
//! permission fails a test here rather than with a 403 in a cluster.
//!
//! Notes on the verbs:
//! - `list` and `watch` back the controller's watches (its own resource and each child kind;
//!   Secrets are also watched so a change to a referenced Secret rolls the pods).
//! - Server-side apply is a `patch`; applying an object that does not exist yet also needs
//!   `create`.
//! - `delete` removes children that are no longer wanted (e.g. a dependency switched from
//!   `managed` to `external`, a PodDisruptionBudget after scaling down to one replica).
//! - Leases implement leader election (in the operator's own namespace); Events report
//!   failures on the `PaymentSystem` they concern.
//!
//! The operator watches every namespace, so the chart grants these through a ClusterRole.

use k8s_openapi::api::rbac::v1::PolicyRule;

/// `(api_group, resource, verbs)`; `""` is the core group.
pub type Permission = (&'static str, &'static str, &'static [&'static str]);

const READ: &[&str] = &["get", "list", "watch"];
const MANAGE: &[&str] = &["get", "list", "watch", "create", "patch", "delete"];

/// The permissions the operator uses, one row per resource.
pub const REQUIRED: &[Permission] = &[
    ("paysys.io", "paymentsystems", READ),
    ("paysys.io", "paymentsystems/status", &["get", "patch"]),
    ("", "secrets", MANAGE),
    ("", "configmaps", MANAGE),
    ("", "services", MANAGE),
    ("", "persistentvolumeclaims", MANAGE),
    ("apps", "deployments", MANAGE),
    ("policy", "poddisruptionbudgets", MANAGE),
    ("networking.k8s.io", "networkpolicies", MANAGE),
    ("events.k8s.io", "events", &["create", "patch"]),
    ("coordination.k8s.io", "leases", &["get", "create", "patch"]),
];

/// [`REQUIRED`] as RBAC rules, one per API group and identical verb set.
pub fn required_rules() -> Vec<PolicyRule> {
    let mut rules: Vec<PolicyRule> = Vec::new();
    for (group, resource, verbs) in REQUIRED {
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

/// Whether [`REQUIRED`] grants `verb` on `resource` (with subresource, e.g.
/// `paymentsystems/status`) in `api_group`.
pub fn allows(api_group: &str, resource: &str, verb: &str) -> bool {
    REQUIRED.iter().any(|(group, granted, verbs)| {
        *group == api_group && *granted == resource && verbs.contains(&verb)
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
        let expected: usize = REQUIRED.iter().map(|(_, _, verbs)| verbs.len()).sum();
        assert_eq!(granted.len(), expected);
        for (group, resource, verb) in granted {
            assert!(
                allows(&group, &resource, &verb),
                "{group}/{resource} {verb}"
            );
        }
        assert!(
            rules.len() < REQUIRED.len(),
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
}
