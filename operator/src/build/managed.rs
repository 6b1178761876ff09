//! The single-instance RabbitMQ and PostgreSQL the operator runs when a dependency is
//! `managed`: Deployment (Recreate: one pod owns the volume), Service, and the data's
//! PersistentVolumeClaim unless the storage is ephemeral (see [`crate::validate::Storage`]).

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, ExecAction, KeyToPath, PersistentVolumeClaim,
    PersistentVolumeClaimSpec, PersistentVolumeClaimVolumeSource, Probe, SecretVolumeSource,
    Service, ServicePort, ServiceSpec, TCPSocketAction, Volume, VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::meta;
use super::pod::{self, Rollout};
use crate::names::{Component, DATA_VOLUME, Server};
use crate::validate::{ManagedServer, Storage, Validated};

/// User and database of the managed servers (in their generated credentials, see
/// [`super::secrets`]).
pub const MANAGED_USER: &str = "paysys";
pub const MANAGED_DATABASE: &str = "paysys";
/// Key of the RabbitMQ configuration file in its credentials Secret.
pub const RABBITMQ_CONF: &str = "paysys.conf";

/// Users the official images run their servers as (postgres alpine: 70, rabbitmq: 999).
pub const POSTGRES_UID: i64 = 70;
pub const RABBITMQ_UID: i64 = 999;

pub const POSTGRES_PORT: i32 = 5432;
pub const AMQP_PORT: i32 = 5672;

/// The port clients connect to, and its name on the container and the Service.
pub fn port_of(server: Server) -> (&'static str, i32) {
    match server {
        Server::RabbitMq => ("amqp", AMQP_PORT),
        Server::Postgres => ("postgresql", POSTGRES_PORT),
    }
}

/// The objects of one managed server.
pub struct Managed {
    pub deployment: Deployment,
    pub service: Service,
    pub claim: Option<PersistentVolumeClaim>,
}

pub fn build(system: &Validated, server: &ManagedServer) -> Managed {
    let (container, volumes, uid) = match server.server {
        Server::RabbitMq => rabbitmq(system, server),
        Server::Postgres => postgres(system, server),
    };
    let hash = meta::config_hash(system, &[&server.credentials_secret], &[]);
    let pod = pod::pod_spec(system, uid, vec![container], volumes);
    let component = server.server.component();
    Managed {
        deployment: pod::deployment(system, component, Some(1), Rollout::Recreate, hash, pod),
        service: service(system, server.server),
        claim: match &server.storage {
            Storage::Claim { size, class } => Some(claim(
                system,
                server.server.component(),
                system.names.data(server.server),
                size,
                class,
            )),
            Storage::Ephemeral(_) => None,
        },
    }
}

/// Where the server keeps its data: its claim, or an emptyDir when ephemeral.
fn data_volume(system: &Validated, server: &ManagedServer) -> Volume {
    match &server.storage {
        Storage::Claim { .. } => Volume {
            name: DATA_VOLUME.into(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: system.names.data(server.server),
                read_only: Some(false),
            }),
            ..Volume::default()
        },
        Storage::Ephemeral(_) => pod::empty_dir(DATA_VOLUME),
    }
}

fn exec_probe(command: &str, period_seconds: i32, timeout_seconds: i32, failures: i32) -> Probe {
    Probe {
        exec: Some(ExecAction {
            command: Some(vec!["sh".into(), "-c".into(), command.into()]),
        }),
        period_seconds: Some(period_seconds),
        timeout_seconds: Some(timeout_seconds),
        failure_threshold: Some(failures),
        ..Probe::default()
    }
}

fn tcp_probe(port: &str, period_seconds: i32, failures: i32) -> Probe {
    Probe {
        tcp_socket: Some(TCPSocketAction {
            port: IntOrString::String(port.into()),
            host: None,
        }),
        period_seconds: Some(period_seconds),
        timeout_seconds: Some(2),
        failure_threshold: Some(failures),
        ..Probe::default()
    }
}

fn port(name: &str, number: i32) -> ContainerPort {
    ContainerPort {
        name: Some(name.into()),
        container_port: number,
        protocol: Some("TCP".into()),
        ..ContainerPort::default()
    }
}

/// The server's container, volumes and user.
type Pod = (Container, Vec<Volume>, i64);

fn postgres(system: &Validated, server: &ManagedServer) -> Pod {
    let secret = &server.credentials_secret;
    let (port_name, port_number) = port_of(Server::Postgres);
    let mut container = pod::container(system, "postgresql", &server.image);
    container.ports = Some(vec![port(port_name, port_number)]);
    container.env = Some(vec![
        pod::env_from_secret("POSTGRES_USER", secret, "username"),
        pod::env_from_secret("POSTGRES_PASSWORD", secret, "password"),
        pod::env("POSTGRES_DB", MANAGED_DATABASE),
        // A subdirectory: the volume root may hold lost+found, which initdb refuses.
        pod::env("PGDATA", "/var/lib/postgresql/data/pgdata"),
    ]);
    container.resources = Some(server.resources.clone());
    // The root filesystem is read-only: data, the socket directory and /tmp are volumes.
    container.volume_mounts = Some(vec![
        pod::mount("data", "/var/lib/postgresql/data", false),
        pod::mount("run", "/var/run/postgresql", false),
        pod::mount("tmp", "/tmp", false),
    ]);
    let ready = "pg_isready -h 127.0.0.1 -U \"$POSTGRES_USER\" -d \"$POSTGRES_DB\"";
    container.startup_probe = Some(exec_probe(ready, 2, 2, 60));
    container.liveness_probe = Some(exec_probe(ready, 10, 5, 6));
    container.readiness_probe = Some(exec_probe(ready, 5, 2, 2));
    let volumes = vec![
        data_volume(system, server),
        pod::empty_dir("run"),
        pod::empty_dir("tmp"),
    ];
    (container, volumes, POSTGRES_UID)
}

fn rabbitmq(system: &Validated, server: &ManagedServer) -> Pod {
    let (port_name, port_number) = port_of(Server::RabbitMq);
    let mut container = pod::container(system, "rabbitmq", &server.image);
    container.ports = Some(vec![port(port_name, port_number)]);
    container.env = Some(vec![
        // A fixed node name: the data directory is named after it, and a pod's hostname
        // changes with every replacement.
        pod::env("RABBITMQ_NODENAME", "rabbit@localhost"),
        pod::env("RABBITMQ_LOGS", "-"),
    ]);
    container.resources = Some(server.resources.clone());
    container.volume_mounts = Some(vec![
        pod::mount("data", "/var/lib/rabbitmq", false),
        pod::mount("config", "/etc/rabbitmq/conf.d", true),
        pod::mount("tmp", "/tmp", false),
    ]);
    container.startup_probe = Some(tcp_probe("amqp", 2, 60));
    container.liveness_probe = Some(exec_probe("rabbitmq-diagnostics -q ping", 30, 20, 3));
    container.readiness_probe = Some(tcp_probe("amqp", 5, 2));
    let config = Volume {
        name: "config".into(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(server.credentials_secret.clone()),
            items: Some(vec![KeyToPath {
                key: RABBITMQ_CONF.into(),
                path: "20-paysys.conf".into(),
                mode: None,
                user: None,
            }]),
            default_mode: Some(0o440),
            optional: Some(false),
            ..SecretVolumeSource::default()
        }),
        ..Volume::default()
    };
    let volumes = vec![data_volume(system, server), config, pod::empty_dir("tmp")];
    (container, volumes, RABBITMQ_UID)
}

fn service(system: &Validated, server: Server) -> Service {
    let component = server.component();
    let (port_name, port) = port_of(server);
    Service {
        metadata: meta::object_meta(system, component, system.names.workload(component)),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            selector: Some(meta::selector_labels(&system.names, component)),
            ports: Some(vec![ServicePort {
                name: Some(port_name.into()),
                port,
                target_port: Some(IntOrString::String(port_name.into())),
                protocol: Some("TCP".into()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

/// A ReadWriteOnce claim `name` of `size` for `component` (a managed server or the data feed).
pub(super) fn claim(
    system: &Validated,
    component: Component,
    name: String,
    size: &str,
    storage_class: &Option<String>,
) -> PersistentVolumeClaim {
    PersistentVolumeClaim {
        metadata: meta::object_meta(system, component, name),
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            storage_class_name: storage_class.clone(),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".to_string(),
                    Quantity(size.into()),
                )])),
                ..VolumeResourceRequirements::default()
            }),
            ..PersistentVolumeClaimSpec::default()
        }),
        status: None,
    }
}
