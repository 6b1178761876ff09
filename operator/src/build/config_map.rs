//! The ConfigMaps mounted into the risk engine: the risk rules (`RISK_RULES_FILE`) and the
//! operator's copies of the risk models read from ConfigMaps (see [`model_copy`]).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;

use super::{meta, model_copy};
use crate::names::Component;
use crate::validate::Validated;

/// Key (and file name) of the rules in the ConfigMap.
pub const RULES_KEY: &str = "rules.yaml";

/// Every ConfigMap: the risk rules and a copy of each checked risk model read from a
/// ConfigMap.
pub fn build(system: &Validated) -> Vec<ConfigMap> {
    let mut config_maps = vec![risk_rules(system)];
    config_maps.extend(model_copy::config_maps(system));
    config_maps
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
