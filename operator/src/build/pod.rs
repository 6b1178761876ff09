//! Pieces every pod shares: restricted security contexts, probes, environment variables,
//! volumes, and the Deployment wrapper.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment,
};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, EmptyDirVolumeSource, EnvVar, EnvVarSource, HTTPGetAction,
    LocalObjectReference, PodSecurityContext, PodSpec, PodTemplateSpec, Probe, SeccompProfile,
    SecretKeySelector, SecurityContext, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::meta::{self, CONFIG_HASH};
use crate::names::{Component, Server};
use crate::validate::{Connection, PodIds, Validated};

/// User and group the paysys service images run as (distroless `nonroot`).
pub const SERVICE_UID: i64 = 65532;

/// Pod-level security: never root and the runtime's default seccomp profile, whatever `ids`
/// say. With fixed ids the pod runs as `image_id` (user and group; the images' own) unless
/// `ids` replace them, and its volumes are group-owned so a non-root server can write its
/// data; with platform-assigned ids none is set (OpenShift's `restricted-v2` sets them).
pub fn pod_security(ids: PodIds, image_id: i64) -> PodSecurityContext {
    let (run_as_user, run_as_group, fs_group) = match ids {
        PodIds::Fixed {
            user,
            group,
            fs_group,
        } => {
            let group = group.unwrap_or(image_id);
            (
                Some(user.unwrap_or(image_id)),
                Some(group),
                Some(fs_group.unwrap_or(group)),
            )
        }
        PodIds::PlatformAssigned => (None, None, None),
    };
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user,
        run_as_group,
        fs_group,
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".into(),
            ..SeccompProfile::default()
        }),
        ..PodSecurityContext::default()
    }
}

/// Container-level security: read-only root filesystem, no privilege escalation, no
/// capabilities at all.
pub fn container_security() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            ..Capabilities::default()
        }),
        ..SecurityContext::default()
    }
}

/// An HTTP GET probe on the container port named `http`.
pub fn http_probe(path: &str, period_seconds: i32, failure_threshold: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String("http".into()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period_seconds),
        timeout_seconds: Some(2),
        failure_threshold: Some(failure_threshold),
        ..Probe::default()
    }
}

/// Probes of a paysys service: a start-up allowance of a minute (waiting for the database or
/// broker), liveness on `/healthz`, readiness on `/readyz`.
pub fn service_probes(container: &mut Container) {
    container.startup_probe = Some(http_probe("/healthz", 2, 30));
    container.liveness_probe = Some(http_probe("/healthz", 10, 3));
    container.readiness_probe = Some(http_probe("/readyz", 5, 2));
}

pub fn env(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        ..EnvVar::default()
    }
}

pub fn env_from_secret(name: &str, secret: &str, key: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.into(),
                key: key.into(),
                optional: Some(false),
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

/// `variable` set to the connection URL of `connection`.
///
/// The RabbitMQ Cluster Operator's `connection_string` ends in `/`, which AMQP URIs read as
/// the empty vhost, not the default `/`: the URL is that string followed by `%2f`, through
/// Kubernetes' `$(VAR)` expansion (the helper variable comes first, as expansion requires).
pub fn connection_env(variable: &str, connection: &Connection) -> Vec<EnvVar> {
    let (secret, key) = connection.url_source();
    match connection.operated() {
        Some(operated) if operated.server == Server::RabbitMq => {
            let raw = format!("PAYSYS_{variable}_CONNECTION_STRING");
            vec![
                env_from_secret(&raw, secret, key),
                env(variable, format!("$({raw})%2f")),
            ]
        }
        _ => vec![env_from_secret(variable, secret, key)],
    }
}

pub fn empty_dir(name: &str) -> Volume {
    Volume {
        name: name.into(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Volume::default()
    }
}

pub fn mount(name: &str, path: &str, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        read_only: Some(read_only),
        ..VolumeMount::default()
    }
}

/// Rollout of a workload.
pub enum Rollout {
    /// New pods ready before old ones go: the stateless services.
    Surge,
    /// Old pod gone before the new one starts: single-instance servers owning a volume.
    Recreate,
}

/// A Deployment of `replicas` pods running `pod`, with the configuration hash on the
/// template so a change to the Secrets/ConfigMaps it reads rolls the pods. `replicas` is
/// `None` when an autoscaler owns the count: the field is then left out of the apply, so the
/// operator never owns it (see [`crate::replicas`]).
pub fn deployment(
    system: &Validated,
    component: Component,
    replicas: Option<i32>,
    rollout: Rollout,
    config_hash: String,
    pod: PodSpec,
) -> Deployment {
    let strategy = match rollout {
        Rollout::Surge => DeploymentStrategy {
            type_: Some("RollingUpdate".into()),
            rolling_update: Some(RollingUpdateDeployment {
                max_surge: Some(IntOrString::Int(1)),
                max_unavailable: Some(IntOrString::Int(0)),
            }),
        },
        Rollout::Recreate => DeploymentStrategy {
            type_: Some("Recreate".into()),
            rolling_update: None,
        },
    };
    let mut pod_labels = meta::labels(&system.names, component);
    pod_labels.insert("app.kubernetes.io/version".into(), system.version.clone());
    Deployment {
        metadata: meta::object_meta(system, component, system.names.workload(component)),
        spec: DeploymentSpec {
            replicas,
            revision_history_limit: Some(3),
            selector: meta::selector(&system.names, component),
            strategy: Some(strategy),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    annotations: Some(BTreeMap::from([(CONFIG_HASH.into(), config_hash)])),
                    ..ObjectMeta::default()
                }),
                spec: Some(pod),
            },
            ..DeploymentSpec::default()
        },
        status: None,
    }
}

/// The pod settings every component shares; the caller adds containers and volumes.
/// `image_id` is the user and group the component's image runs as.
pub fn pod_spec(
    system: &Validated,
    image_id: i64,
    containers: Vec<Container>,
    volumes: Vec<Volume>,
) -> PodSpec {
    let pull_secrets = &system.pull_secrets;
    PodSpec {
        containers,
        volumes: Some(volumes),
        security_context: Some(pod_security(system.pod_ids, image_id)),
        // The services talk to the API server never; no token in their pods.
        automount_service_account_token: Some(false),
        // Service links would add dozens of variables, some colliding with the services'.
        enable_service_links: Some(false),
        image_pull_secrets: (!pull_secrets.is_empty()).then(|| {
            pull_secrets
                .iter()
                .map(|name| LocalObjectReference { name: name.clone() })
                .collect()
        }),
        termination_grace_period_seconds: Some(30),
        ..PodSpec::default()
    }
}

/// A container with the image pull policy, resources and security context filled in.
pub fn container(system: &Validated, name: &str, image: &str) -> Container {
    Container {
        name: name.into(),
        image: Some(image.into()),
        image_pull_policy: Some(system.pull_policy.as_str().into()),
        security_context: Some(container_security()),
        ..Container::default()
    }
}
