//! The operator's copies of the checked risk models (`MODEL_DIR`, `SHADOW_MODEL_DIR`): an
//! immutable ConfigMap per model read from a ConfigMap, an immutable Secret per model read
//! from a Secret, each holding the files the operator checked and named after their content.
//!
//! The pods mount the copy, never the user's object, so editing that one (even into a broken
//! model) changes nothing a pod reads until the operator has checked the edit and rolled out
//! a new copy; the kubelet also stops watching an immutable object. A copy no longer built is
//! pruned once no pod template mounts it. The user's ConfigMap or Secret is only read.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};

use super::meta;
use crate::names::Component;
use crate::observe::models::ModelStore;
use crate::validate::{ModelCopy, Validated};

/// The copies held in `store`; the same model as champion and challenger is one copy.
fn copies(system: &Validated, store: ModelStore) -> Vec<&ModelCopy> {
    let mut copies: Vec<&ModelCopy> = system
        .risk_engine
        .model
        .iter()
        .flat_map(|models| &models.copies)
        .filter(|copy| copy.store == store)
        .collect();
    copies.sort_by(|a, b| a.name.cmp(&b.name));
    copies.dedup_by(|a, b| a.name == b.name);
    copies
}

/// An immutable ConfigMap per model read from a ConfigMap.
pub fn config_maps(system: &Validated) -> Vec<ConfigMap> {
    copies(system, ModelStore::ConfigMap)
        .into_iter()
        .map(|copy| ConfigMap {
            metadata: meta::object_meta(system, Component::RiskEngine, copy.name.clone()),
            data: Some(copy.files.clone()),
            immutable: Some(true),
            ..ConfigMap::default()
        })
        .collect()
}

/// An immutable Secret per model read from a Secret.
pub fn secrets(system: &Validated) -> Vec<Secret> {
    copies(system, ModelStore::Secret)
        .into_iter()
        .map(|copy| Secret {
            metadata: meta::object_meta(system, Component::RiskEngine, copy.name.clone()),
            type_: Some("Opaque".into()),
            data: Some(
                copy.files
                    .iter()
                    .map(|(key, value)| (key.clone(), ByteString(value.clone().into_bytes())))
                    .collect::<BTreeMap<_, _>>(),
            ),
            immutable: Some(true),
            ..Secret::default()
        })
        .collect()
}
