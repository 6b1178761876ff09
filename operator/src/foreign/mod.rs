//! Dependencies run by other operators: a CloudNativePG `Cluster` for PostgreSQL, a
//! `RabbitmqCluster` of the RabbitMQ Cluster Operator for the broker.
//!
//! Their CRDs are optional: a cluster without them runs every `PaymentSystem` that does not ask
//! for them. So, unlike the built-in child kinds,
//! - before applying, the operator checks (through API discovery, which every authenticated
//!   client may read) that the CRDs a system needs are served; if not, the system is `Degraded`
//!   with reason `CrdMissing`, a message naming the CRD and how to install it, and nothing is
//!   applied; the reconcile is retried with backoff (at most 5 minutes), so installing the
//!   CRD later is picked up without a restart;
//! - their watches retry with backoff while the CRD is absent (a plain `owns` would spin on
//!   404s), and start delivering once it is installed;
//! - their watches map an object to its `PaymentSystem` by the instance label, not by owner
//!   reference: with `deletionPolicy: Retain` (the default) the cluster has no owner, so that
//!   deleting the `PaymentSystem` keeps the data;
//! - pruning a kind whose CRD is absent finds nothing to prune (see [`crate::apply`]).

pub mod cnpg;
pub mod rabbitmq;
pub mod spec;

use kube::api::ApiResource;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{Controller, WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use serde::{Deserialize, Serialize};

use k8s_openapi::api::core::v1::ResourceRequirements;

use self::spec::{CloudNativePgSpec, ClusterOperatorSpec, DeletionPolicy, VolumeSpec};
use crate::children::ChildKind;
use crate::controller::Scope;
use crate::crd::PaymentSystem;
use crate::error::Error;
use crate::names::{Names, Server};
use crate::validate::Validated;
use kube::core::error_boundary::DeserializeGuard;

/// An operator's CRD paysys can use, and how a user installs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ForeignCrd {
    /// `<plural>.<group>`, the CRD's name.
    pub name: &'static str,
    pub group: &'static str,
    pub version: &'static str,
    pub plural: &'static str,
    /// The operator that serves it, for messages.
    pub operator: &'static str,
    /// How to install that operator (and so the CRD).
    pub install: &'static str,
}

/// CloudNativePG's `Cluster`.
pub const CLOUDNATIVE_PG: ForeignCrd = ForeignCrd {
    name: "clusters.postgresql.cnpg.io",
    group: "postgresql.cnpg.io",
    version: "v1",
    plural: "clusters",
    operator: "CloudNativePG",
    install: "kubectl apply --server-side -f https://raw.githubusercontent.com/cloudnative-pg/cloudnative-pg/release-1.30/releases/cnpg-1.30.0.yaml (or helm install cnpg cnpg/cloudnative-pg)",
};

/// The RabbitMQ Cluster Operator's `RabbitmqCluster`.
pub const RABBITMQ_CLUSTER_OPERATOR: ForeignCrd = ForeignCrd {
    name: "rabbitmqclusters.rabbitmq.com",
    group: "rabbitmq.com",
    version: "v1beta1",
    plural: "rabbitmqclusters",
    operator: "the RabbitMQ Cluster Operator",
    install: "kubectl apply -f https://github.com/rabbitmq/cluster-operator/releases/download/v2.22.3/cluster-operator.yml",
};

/// Every foreign CRD paysys knows.
pub const CRDS: [ForeignCrd; 2] = [CLOUDNATIVE_PG, RABBITMQ_CLUSTER_OPERATOR];

impl ForeignCrd {
    /// The CRD serving `server` when it is run by another operator.
    pub fn of(server: Server) -> Self {
        match server {
            Server::Postgres => CLOUDNATIVE_PG,
            Server::RabbitMq => RABBITMQ_CLUSTER_OPERATOR,
        }
    }

    /// The foreign CRD serving kind `K`, if `K` is one.
    pub fn of_kind<K: Resource<DynamicType = ()>>() -> Option<Self> {
        let kind = ApiResource::erase::<K>(&());
        CRDS.into_iter()
            .find(|crd| crd.group == kind.group && crd.plural == kind.plural)
    }
}

/// A condition as the other operators write it (`reason` and `message` may be absent).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", default)]
pub struct ForeignCondition {
    #[serde(rename = "type")]
    pub type_: String,
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

fn condition<'a>(conditions: &'a [ForeignCondition], type_: &str) -> Option<&'a ForeignCondition> {
    conditions.iter().find(|condition| condition.type_ == type_)
}

/// Checks that every CRD `system` needs is served, before anything is applied; names every
/// one that is not.
pub async fn require_crds(client: &Client, system: &Validated) -> Result<(), Error> {
    let mut missing = Vec::new();
    for server in system.operated_servers() {
        let crd = ForeignCrd::of(server.server);
        let group_version = format!("{}/{}", crd.group, crd.version);
        let served = match client.list_api_group_resources(&group_version).await {
            Ok(list) => list
                .resources
                .iter()
                .any(|resource| resource.name == crd.plural),
            Err(kube::Error::Api(status)) if status.code == 404 => false,
            Err(source) => {
                return Err(Error::CrdCheckFailed {
                    crd: crd.name,
                    source,
                });
            }
        };
        if !served {
            missing.push(format!(
                "CustomResourceDefinition {} ({}); install it with: {}",
                crd.name, crd.operator, crd.install
            ));
        }
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(Error::CrdMissing {
            missing: missing.join("; "),
        })
    }
}

/// Adds to `controller` a watch of the foreign kind `K` that survives its CRD being absent
/// (it retries with backoff until the CRD is installed) and maps each object to the
/// `PaymentSystem` named by its instance label, owned or not.
pub fn watch<K: ChildKind>(
    controller: Controller<DeserializeGuard<PaymentSystem>>,
    scope: &Scope,
    client: &Client,
    config: watcher::Config,
) -> Controller<DeserializeGuard<PaymentSystem>> {
    let stream = watcher(scope.api::<K>(client), config)
        .default_backoff()
        .touched_objects();
    controller.watches_stream(stream, |object: K| {
        let instance = object.labels().get("app.kubernetes.io/instance")?.clone();
        let namespace = object.namespace()?;
        Some(ObjectRef::new(&instance).within(&namespace))
    })
}

/// How ready an operated cluster is, from the status its operator wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct Readiness {
    pub server: Server,
    /// `<kind> <name>`, for messages.
    pub object: String,
    pub desired: i32,
    pub ready_replicas: i32,
    pub ready: bool,
    /// What the operator says, for the `Ready` condition's message when not ready.
    pub detail: String,
}

const NO_STATUS: &str = "no status yet (is its operator running?)";

/// A CloudNativePG `Cluster` is ready when its `Ready` condition is `True` and every instance
/// is ready.
pub fn cnpg_readiness(cluster: &cnpg::Cluster) -> Readiness {
    let desired = cluster.spec.instances;
    let status = cluster.status.clone().unwrap_or_default();
    let ready_replicas = status.ready_instances.unwrap_or(0);
    let ready_condition = condition(&status.conditions, "Ready");
    let ready = ready_condition.is_some_and(|c| c.status == "True") && ready_replicas >= desired;
    let detail = match (&status.phase, ready_condition) {
        (Some(phase), _) => {
            format!("phase \"{phase}\", {ready_replicas}/{desired} instances ready")
        }
        (None, Some(c)) => c.message.clone().unwrap_or_else(|| c.status.clone()),
        (None, None) => NO_STATUS.into(),
    };
    Readiness {
        server: Server::Postgres,
        object: format!("Cluster {}", cluster.name_any()),
        desired,
        ready_replicas,
        ready,
        detail,
    }
}

/// A `RabbitmqCluster` is ready when `AllReplicasReady` is `True` and `ReconcileSuccess` is
/// not `False` (its operator failing to apply the spec). Its status counts no ready replicas,
/// so they are all or none.
pub fn rabbitmq_readiness(cluster: &rabbitmq::RabbitmqCluster) -> Readiness {
    let desired = cluster.spec.replicas;
    let conditions = cluster
        .status
        .as_ref()
        .map(|status| status.conditions.as_slice())
        .unwrap_or_default();
    let all_ready = condition(conditions, "AllReplicasReady");
    let reconciled = condition(conditions, "ReconcileSuccess");
    let failed = reconciled.filter(|c| c.status == "False");
    let ready = all_ready.is_some_and(|c| c.status == "True") && failed.is_none();
    let describe = |c: &ForeignCondition| {
        format!(
            "{} is {}{}",
            c.type_,
            c.status,
            c.message
                .as_deref()
                .filter(|m| !m.is_empty())
                .map(|m| format!(": {m}"))
                .unwrap_or_default()
        )
    };
    let detail = match (failed, all_ready) {
        (Some(failed), _) => describe(failed),
        (None, Some(all_ready)) => describe(all_ready),
        (None, None) => NO_STATUS.into(),
    };
    Readiness {
        server: Server::RabbitMq,
        object: format!("RabbitmqCluster {}", cluster.name_any()),
        desired,
        ready_replicas: if ready { desired } else { 0 },
        ready,
        detail,
    }
}

/// Readiness of every operated cluster, as the API server returned them after the apply.
pub fn readiness(
    clusters: &[cnpg::Cluster],
    rabbitmq_clusters: &[rabbitmq::RabbitmqCluster],
) -> Vec<Readiness> {
    rabbitmq_clusters
        .iter()
        .map(rabbitmq_readiness)
        .chain(clusters.iter().map(cnpg_readiness))
        .collect()
}

/// A server another operator runs, with defaults resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct Operated {
    pub server: Server,
    /// The `Cluster` or `RabbitmqCluster`.
    pub name: String,
    /// The Secret that operator generates with the connection URL, and its key.
    pub secret: String,
    pub key: &'static str,
    pub replicas: i32,
    pub storage: VolumeSpec,
    pub image: Option<String>,
    pub resources: Option<ResourceRequirements>,
    pub deletion_policy: DeletionPolicy,
}

/// Key of the URL in CloudNativePG's application Secret (`postgresql://app:...@<name>-rw...`).
pub const CNPG_URI_KEY: &str = "uri";
/// Key of the URL in the RabbitMQ Cluster Operator's default-user Secret
/// (`amqp://<user>:<password>@<host>:5672/`, no vhost: see [`crate::build::pod`]).
pub const RABBITMQ_URL_KEY: &str = "connection_string";

impl Operated {
    /// The Secret holding the connection URL of `server` run by its operator: CloudNativePG
    /// names its application Secret `<cluster>-app`, the Cluster Operator its default user's
    /// `<cluster>-default-user`.
    pub fn secret_of(names: &Names, server: Server) -> String {
        let name = names.operated(server);
        match server {
            Server::Postgres => format!("{name}-app"),
            Server::RabbitMq => format!("{name}-default-user"),
        }
    }

    pub fn cloud_native_pg(names: &Names, spec: &CloudNativePgSpec) -> Self {
        Self {
            server: Server::Postgres,
            name: names.operated(Server::Postgres),
            secret: Self::secret_of(names, Server::Postgres),
            key: CNPG_URI_KEY,
            replicas: spec.instances,
            storage: spec.storage.clone(),
            image: spec.image_name.clone(),
            resources: spec.resources.clone(),
            deletion_policy: spec.deletion_policy,
        }
    }

    pub fn rabbitmq(names: &Names, spec: &ClusterOperatorSpec) -> Self {
        Self {
            server: Server::RabbitMq,
            name: names.operated(Server::RabbitMq),
            secret: Self::secret_of(names, Server::RabbitMq),
            key: RABBITMQ_URL_KEY,
            replicas: spec.replicas,
            storage: spec.storage.clone(),
            image: spec.image.clone(),
            resources: spec.resources.clone(),
            deletion_policy: spec.deletion_policy,
        }
    }

    /// The Secret and key holding the connection URL.
    pub fn url_source(&self) -> (&str, &str) {
        (&self.secret, self.key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(instances: i32, status: serde_json::Value) -> cnpg::Cluster {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "postgresql.cnpg.io/v1", "kind": "Cluster",
            "metadata": {"name": "shop-pg"},
            "spec": {"instances": instances, "storage": {"size": "1Gi"}},
            "status": status,
        }))
        .unwrap()
    }

    fn rabbit(conditions: serde_json::Value) -> rabbitmq::RabbitmqCluster {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "rabbitmq.com/v1beta1", "kind": "RabbitmqCluster",
            "metadata": {"name": "shop-mq"},
            "spec": {"replicas": 3, "persistence": {"storage": "10Gi"}},
            "status": {"conditions": conditions},
        }))
        .unwrap()
    }

    #[test]
    fn a_cnpg_cluster_is_ready_with_its_condition_and_every_instance() {
        let ready = serde_json::json!([{"type": "Ready", "status": "True"}]);
        let healthy = cluster(
            3,
            serde_json::json!({"readyInstances": 3, "conditions": ready}),
        );
        assert!(cnpg_readiness(&healthy).ready);
        let short = cluster(
            3,
            serde_json::json!({"readyInstances": 2, "conditions": ready,
            "phase": "Waiting for the instances to become active"}),
        );
        let short = cnpg_readiness(&short);
        assert!(!short.ready);
        assert_eq!(
            short.detail,
            "phase \"Waiting for the instances to become active\", 2/3 instances ready"
        );
        let silent = cnpg_readiness(&cluster(3, serde_json::json!({})));
        assert!(!silent.ready);
        assert_eq!(silent.detail, NO_STATUS);
    }

    #[test]
    fn a_rabbitmq_cluster_is_ready_when_all_replicas_are_and_its_operator_succeeded() {
        let ready = rabbit(serde_json::json!([
            {"type": "AllReplicasReady", "status": "True"},
            {"type": "ReconcileSuccess", "status": "True"},
        ]));
        assert_eq!(rabbitmq_readiness(&ready).ready_replicas, 3);
        let failing = rabbitmq_readiness(&rabbit(serde_json::json!([
            {"type": "AllReplicasReady", "status": "True"},
            {"type": "ReconcileSuccess", "status": "False", "message": "quota"},
        ])));
        assert!(!failing.ready);
        assert_eq!(failing.detail, "ReconcileSuccess is False: quota");
        let starting = rabbitmq_readiness(&rabbit(serde_json::json!([
            {"type": "AllReplicasReady", "status": "False"},
        ])));
        assert_eq!((starting.ready, starting.ready_replicas), (false, 0));
        assert_eq!(
            rabbitmq_readiness(&rabbit(serde_json::json!([]))).detail,
            NO_STATUS
        );
    }

    #[test]
    fn only_the_foreign_kinds_are_foreign() {
        assert_eq!(ForeignCrd::of_kind::<cnpg::Cluster>(), Some(CLOUDNATIVE_PG));
        assert_eq!(
            ForeignCrd::of_kind::<rabbitmq::RabbitmqCluster>(),
            Some(RABBITMQ_CLUSTER_OPERATOR)
        );
        assert_eq!(
            ForeignCrd::of_kind::<k8s_openapi::api::core::v1::Service>(),
            None
        );
    }
}
