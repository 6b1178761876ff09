//! The risk rules ConfigMap, mounted into the risk engine as `RISK_RULES_FILE`.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;

use super::meta;
use crate::names::Component;
use crate::validate::Validated;

/// Key (and file name) of the rules in the ConfigMap.
pub const RULES_KEY: &str = "rules.yaml";

/// Every ConfigMap: the risk rules.
pub fn build(system: &Validated) -> Vec<ConfigMap> {
    vec![risk_rules(system)]
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
