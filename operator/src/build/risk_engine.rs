//! The risk engine Deployment (a queue consumer: no Service, only a metrics port).

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMapVolumeSource, ContainerPort, EnvVar, Volume};

use super::config_map::RULES_KEY;
use super::meta;
use super::pod::{self, Rollout, SERVICE_UID};
use crate::names::{Component, Workload};
use crate::validate::Validated;

/// Port of the risk engine's health and metrics endpoints (`PORT`).
pub const RISK_PORT: i32 = 8080;
/// Directory the rules ConfigMap is mounted in.
pub const RULES_DIR: &str = "/etc/paysys/risk";

pub fn deployment(system: &Validated) -> Deployment {
    let component = Component::RiskEngine;
    let risk = &system.risk_engine;
    let mut container = pod::container(system, component.name(), &risk.image);
    container.ports = Some(vec![ContainerPort {
        name: Some("http".into()),
        container_port: RISK_PORT,
        protocol: Some("TCP".into()),
        ..ContainerPort::default()
    }]);
    container.env = Some(environment(system));
    container.resources = Some(risk.resources.clone());
    container.volume_mounts = Some(vec![pod::mount("rules", RULES_DIR, true)]);
    pod::service_probes(&mut container);
    let volumes = vec![Volume {
        name: "rules".into(),
        config_map: Some(ConfigMapVolumeSource {
            name: system.names.rules(),
            default_mode: Some(0o444),
            ..ConfigMapVolumeSource::default()
        }),
        ..Volume::default()
    }];
    let hash = meta::config_hash(
        system,
        &[system.rabbitmq.url_source().0],
        &[&risk.rules_yaml],
    );
    pod::deployment(
        system,
        component,
        system.fixed_replicas(Workload::RiskEngine),
        Rollout::Surge,
        hash,
        pod::pod_spec(system, SERVICE_UID, vec![container], volumes),
    )
}

/// The risk engine's environment contract.
fn environment(system: &Validated) -> Vec<EnvVar> {
    let spec = &system.risk_engine;
    let mut env = vec![pod::env("PORT", RISK_PORT.to_string())];
    env.extend(pod::connection_env("AMQP_URL", &system.rabbitmq));
    env.extend([
        pod::env("RISK_MODE", spec.mode.as_str()),
        pod::env("RISK_RULES_FILE", format!("{RULES_DIR}/{RULES_KEY}")),
        pod::env(
            "RISK_APPROVAL_PROBABILITY",
            spec.approval_probability.to_string(),
        ),
        pod::env("LOG_FORMAT", "json"),
    ]);
    if let Some(prefetch) = spec.prefetch {
        env.push(pod::env("RISK_PREFETCH", prefetch.to_string()));
    }
    if let Some(level) = &spec.log_level {
        env.push(pod::env("RUST_LOG", level));
    }
    env
}
