//! Metadata every child carries: name, namespace, owner reference, standard labels, and the
//! content hash that rolls pods when their configuration changes.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use sha2::{Digest, Sha256};

use crate::names::{Component, Names};
use crate::validate::Validated;

/// Pod-template annotation holding the hash of the Secrets and ConfigMaps a pod reads.
pub const CONFIG_HASH: &str = "paysys.io/config-hash";

pub const MANAGED_BY: &str = "paysys-operator";

/// `app.kubernetes.io/*` labels of a component's objects.
pub fn labels(names: &Names, component: Component) -> BTreeMap<String, String> {
    let mut labels = selector_labels(names, component);
    labels.insert(
        "app.kubernetes.io/component".into(),
        component.role().into(),
    );
    labels.insert("app.kubernetes.io/part-of".into(), "paysys".into());
    labels.insert("app.kubernetes.io/managed-by".into(), MANAGED_BY.into());
    labels
}

/// The subset of [`labels`] that selects a component's pods. Never changes over a
/// Deployment's life (selectors are immutable), so it holds no version.
pub fn selector_labels(names: &Names, component: Component) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".into(), component.name().into()),
        ("app.kubernetes.io/instance".into(), names.instance.clone()),
    ])
}

/// Label selector matching every child of the instance (with the owner reference, how the
/// operator finds what to prune).
pub fn children_selector(names: &Names) -> String {
    format!(
        "app.kubernetes.io/instance={},app.kubernetes.io/managed-by={MANAGED_BY}",
        names.instance
    )
}

pub fn selector(names: &Names, component: Component) -> LabelSelector {
    LabelSelector {
        match_labels: Some(selector_labels(names, component)),
        ..LabelSelector::default()
    }
}

/// Metadata of a child named `name` belonging to `component`.
pub fn object_meta(system: &Validated, component: Component, name: String) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: Some(system.namespace.clone()),
        labels: Some(labels(&system.names, component)),
        owner_references: Some(vec![system.owner.clone()]),
        ..ObjectMeta::default()
    }
}

/// Hex SHA-256 of the given configuration parts: the Secrets' data (by name, then key) and
/// any rendered files. Sorted maps make it deterministic.
pub fn config_hash(system: &Validated, secrets: &[&str], files: &[&str]) -> String {
    let mut hasher = Sha256::new();
    for name in secrets {
        hasher.update(b"secret\0");
        hasher.update(name.as_bytes());
        for (key, value) in system.secrets.get(*name).into_iter().flatten() {
            hasher.update(b"\0");
            hasher.update(key.as_bytes());
            hasher.update(b"\0");
            hasher.update((value.0.len() as u64).to_be_bytes());
            hasher.update(&value.0);
        }
    }
    for file in files {
        hasher.update(b"file\0");
        hasher.update((file.len() as u64).to_be_bytes());
        hasher.update(file.as_bytes());
    }
    hex::encode(hasher.finalize())
}
