//! The risk engine Deployment (a queue consumer: no Service, only a metrics port).

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{
    ConfigMapVolumeSource, ContainerPort, EnvVar, PersistentVolumeClaimVolumeSource,
    SecretVolumeSource, Volume, VolumeMount,
};

use super::config_map::RULES_KEY;
use super::meta;
use super::pod::{self, Rollout, SERVICE_UID};
use crate::names::{Component, Workload};
use crate::observe::models::{
    MODEL_VERSION, MODEL_VOLUME, ModelStore, SHADOW_MODEL_VERSION, SHADOW_MODEL_VOLUME,
};
use crate::validate::{HeldEngine, ModelLocation, ServedModel, Validated};

/// Port of the risk engine's health and metrics endpoints (`PORT`).
pub const RISK_PORT: i32 = 8080;
/// Directory the rules ConfigMap is mounted in.
pub const RULES_DIR: &str = "/etc/paysys/risk";
/// Directory of the champion model (`MODEL_DIR`).
pub const MODEL_DIR: &str = "/etc/paysys/model";
/// Directory of the challenger model (`SHADOW_MODEL_DIR`).
pub const SHADOW_MODEL_DIR: &str = "/etc/paysys/shadow-model";

/// How one model reaches the engine: its volume, mount, variables and annotation.
struct ModelSlot {
    volume: &'static str,
    dir: &'static str,
    dir_variable: &'static str,
    version_variable: &'static str,
    annotation: &'static str,
}

const CHAMPION: ModelSlot = ModelSlot {
    volume: MODEL_VOLUME,
    dir: MODEL_DIR,
    dir_variable: "MODEL_DIR",
    version_variable: "MODEL_VERSION",
    annotation: MODEL_VERSION,
};

const SHADOW: ModelSlot = ModelSlot {
    volume: SHADOW_MODEL_VOLUME,
    dir: SHADOW_MODEL_DIR,
    dir_variable: "SHADOW_MODEL_DIR",
    version_variable: "SHADOW_MODEL_VERSION",
    annotation: SHADOW_MODEL_VERSION,
};

/// The risk engine Deployment; none while a refused first model leaves no good one to serve
/// and there is no Deployment yet (see `validate::HeldEngine`).
pub fn deployment(system: &Validated) -> Option<Deployment> {
    let mut deployment = from_spec(system);
    match system
        .risk_engine
        .held_back
        .as_ref()
        .map(|held| &held.engine)
    {
        None | Some(HeldEngine::Models) => {}
        // Everything but the pods: replicas and the rest follow the spec, the template stays.
        Some(HeldEngine::Template(live)) => deployment.spec.template = (**live).clone(),
        Some(HeldEngine::Absent) => return None,
    }
    Some(deployment)
}

fn from_spec(system: &Validated) -> Deployment {
    let component = Component::RiskEngine;
    let risk = &system.risk_engine;
    let mut container = pod::container(system, component.name(), &risk.image);
    container.ports = Some(vec![ContainerPort {
        name: Some("http".into()),
        container_port: RISK_PORT,
        protocol: Some("TCP".into()),
        ..ContainerPort::default()
    }]);
    let mut env = environment(system);
    let mut mounts = vec![pod::mount("rules", RULES_DIR, true)];
    let mut volumes = Vec::new();
    let mut annotations = Vec::new();
    let models = risk.model.iter().flat_map(|models| {
        [
            (&CHAMPION, Some(&models.champion)),
            (&SHADOW, models.shadow.as_ref()),
        ]
    });
    for (slot, model) in models {
        let Some(model) = model else {
            continue;
        };
        let (volume, mount) = model_volume(slot, model);
        volumes.push(volume);
        mounts.push(mount);
        env.push(pod::env(slot.dir_variable, slot.dir));
        if let ModelLocation::Claim { .. } = model.location {
            // The operator cannot read the claim: the engine checks the version it holds.
            env.push(pod::env(slot.version_variable, &model.version));
        }
        annotations.push((slot.annotation, model.version().to_owned()));
    }
    container.env = Some(env);
    container.resources = Some(risk.resources.clone());
    container.volume_mounts = Some(mounts);
    pod::service_probes(&mut container);
    volumes.insert(
        0,
        Volume {
            name: "rules".into(),
            config_map: Some(ConfigMapVolumeSource {
                name: system.names.rules(),
                default_mode: Some(0o444),
                ..ConfigMapVolumeSource::default()
            }),
            ..Volume::default()
        },
    );
    let hash = meta::config_hash(
        system,
        &[system.rabbitmq.url_source().0],
        &[&risk.rules_yaml],
    );
    // `Surge` keeps every old pod until a new one is ready: pods of a model the engine
    // refuses (exit 2) never become ready, so they never replace the pods of a good one.
    let mut deployment = pod::deployment(
        system,
        component,
        system.fixed_replicas(Workload::RiskEngine),
        Rollout::Surge,
        hash,
        pod::pod_spec(system, SERVICE_UID, vec![container], volumes),
    );
    // A new model version is a new pod template: the pods roll, and each pod says which
    // versions it was started for (what the status and a refusal are matched against).
    if let Some(template) = deployment.spec.template.metadata.as_mut() {
        template
            .annotations
            .get_or_insert_with(Default::default)
            .extend(
                annotations
                    .into_iter()
                    .map(|(key, value)| (key.to_owned(), value)),
            );
    }
    deployment
}

/// The read-only volume and mount of `model` in `slot`.
fn model_volume(slot: &ModelSlot, model: &ServedModel) -> (Volume, VolumeMount) {
    let mut mount = pod::mount(slot.volume, slot.dir, true);
    let volume = match &model.location {
        ModelLocation::Copy {
            store: ModelStore::ConfigMap,
            name,
        } => Volume {
            name: slot.volume.into(),
            config_map: Some(ConfigMapVolumeSource {
                name: name.clone(),
                default_mode: Some(0o444),
                ..ConfigMapVolumeSource::default()
            }),
            ..Volume::default()
        },
        ModelLocation::Copy {
            store: ModelStore::Secret,
            name,
        } => Volume {
            name: slot.volume.into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(name.clone()),
                default_mode: Some(0o444),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        },
        ModelLocation::Claim {
            claim_name,
            sub_path,
        } => {
            mount.sub_path = sub_path.clone();
            Volume {
                name: slot.volume.into(),
                persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                    claim_name: claim_name.clone(),
                    read_only: Some(true),
                }),
                ..Volume::default()
            }
        }
    };
    (volume, mount)
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
