//! The ConfigMaps mounted into the risk engine: the risk rules (`RISK_RULES_FILE`) and the
//! operator's copies of the risk models (`MODEL_DIR`, `SHADOW_MODEL_DIR`).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;

use super::meta;
use crate::names::Component;
use crate::validate::{ServedModel, Validated};

/// Key (and file name) of the rules in the ConfigMap.
pub const RULES_KEY: &str = "rules.yaml";

/// Every ConfigMap: the risk rules and a copy of each checked risk model.
pub fn build(system: &Validated) -> Vec<ConfigMap> {
    let mut config_maps = vec![risk_rules(system)];
    config_maps.extend(model_copies(system));
    config_maps
}

/// An immutable ConfigMap per risk model read from a ConfigMap: the files the operator
/// checked, named after their content. The pods mount the copy, never the user's ConfigMap,
/// so editing that one (even into a broken model) changes nothing a pod reads until the
/// operator has checked the edit and rolled out a new copy; the kubelet also stops watching an
/// immutable ConfigMap. A copy no longer built is pruned once no pod template mounts it.
pub fn model_copies(system: &Validated) -> Vec<ConfigMap> {
    let Some(models) = &system.risk_engine.model else {
        return Vec::new();
    };
    let mut copies: Vec<ConfigMap> = [Some(&models.champion), models.shadow.as_ref()]
        .into_iter()
        .flatten()
        .filter_map(|model| match model {
            ServedModel::Copied { copy, files, .. } => Some(ConfigMap {
                metadata: meta::object_meta(system, Component::RiskEngine, copy.clone()),
                data: Some(files.clone()),
                immutable: Some(true),
                ..ConfigMap::default()
            }),
            ServedModel::Claim { .. } => None,
        })
        .collect();
    // The same model as champion and challenger is one copy.
    copies.dedup_by(|a, b| a.metadata.name == b.metadata.name);
    copies
}

pub fn risk_rules(system: &Validated) -> ConfigMap {
    ConfigMap {
        metadata: meta::object_meta(system, Component::RiskEngine, system.names.rules()),
        data: Some(BTreeMap::from([(
            RULES_KEY.into(),
            system.risk_engine.rules_yaml.clone(),
        )])),
        ..ConfigMap::default()
    }
}
