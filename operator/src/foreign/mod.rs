//! Kinds of other operators' CRDs that paysys creates, and what those operators report:
//! a CloudNativePG `Cluster` for PostgreSQL, a `RabbitmqCluster` of the RabbitMQ Cluster
//! Operator for the broker (and, with their builders, any other such kind, e.g. the Prometheus
//! Operator's `ServiceMonitor`, see `build/service_monitor.rs`).
//!
//! Their CRDs are optional: a cluster without them runs every `PaymentSystem` that does not
//! build them. So, unlike the built-in child kinds (each marked `[foreign]` in the list of
//! kinds, `build/mod.rs`, and implementing [`ForeignKind`]):
//! - before applying, the operator checks (through API discovery, which every authenticated
//!   client may read) that the CRD of every foreign kind the system *builds* is served
//!   (`observe::crds`); if not, the system is `Degraded` with reason `CrdMissing`, a message
//!   naming the CRD and how to install it, and nothing is applied; the reconcile is retried
//!   with backoff (at most 5 minutes), so installing the CRD later is picked up without a
//!   restart;
//! - their watches retry with backoff while the CRD is absent (a plain `owns` would spin on
//!   404s), and start delivering once it is installed;
//! - their watches map an object to its `PaymentSystem` by the instance label, not by owner
//!   reference: with `deletionPolicy: Retain` (the default) a cluster has no owner, so that
//!   deleting the `PaymentSystem` keeps the data;
//! - pruning a kind whose CRD is absent finds nothing to prune (see `apply`);
//! - the status waits for what [`ForeignKind::readiness`] reports of each applied object.
//!
//! Group, version and plural of each CRD come from the kind's Rust type (`kube::Resource`),
//! never restated.

pub mod cnpg;
pub mod rabbitmq;
pub mod spec;

use kube::api::ApiResource;
use kube::{Resource, ResourceExt};
use serde::{Deserialize, Serialize};

use crate::names::Server;

/// A kind of another operator's CRD: who serves it, and how ready an object of it is.
pub trait ForeignKind: Resource<DynamicType = ()> {
    /// The operator that serves the CRD, for messages.
    const OPERATOR: &'static str;
    /// How to install that operator (and so the CRD).
    const INSTALL: &'static str;

    /// How ready the object is, from the status its operator wrote; `None`: nothing to wait
    /// for (the object is configuration, not a server).
    fn readiness(&self) -> Option<Readiness> {
        None
    }
}

/// The CRD serving a foreign kind, and how a user installs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForeignCrd {
    /// `<plural>.<group>`, the CRD's name.
    pub name: String,
    pub group: String,
    pub version: String,
    pub plural: String,
    /// The operator that serves it, for messages.
    pub operator: &'static str,
    /// How to install that operator (and so the CRD).
    pub install: &'static str,
}

impl ForeignCrd {
    /// The CRD of kind `K`, from `K`'s own API resource.
    pub fn of<K: ForeignKind>() -> Self {
        let resource = ApiResource::erase::<K>(&());
        Self {
            name: format!("{}.{}", resource.plural, resource.group),
            group: resource.group,
            version: resource.version,
            plural: resource.plural,
            operator: K::OPERATOR,
            install: K::INSTALL,
        }
    }
}

impl ForeignKind for cnpg::Cluster {
    const OPERATOR: &'static str = "CloudNativePG";
    const INSTALL: &'static str = "kubectl apply --server-side -f https://raw.githubusercontent.com/cloudnative-pg/cloudnative-pg/release-1.30/releases/cnpg-1.30.0.yaml (or helm install cnpg cnpg/cloudnative-pg)";

    fn readiness(&self) -> Option<Readiness> {
        Some(cnpg_readiness(self))
    }
}

impl ForeignKind for rabbitmq::RabbitmqCluster {
    const OPERATOR: &'static str = "the RabbitMQ Cluster Operator";
    const INSTALL: &'static str = "kubectl apply -f https://github.com/rabbitmq/cluster-operator/releases/download/v2.22.3/cluster-operator.yml";

    fn readiness(&self) -> Option<Readiness> {
        Some(rabbitmq_readiness(self))
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
    fn a_foreign_crd_is_named_after_its_kinds_resource() {
        let cnpg = ForeignCrd::of::<cnpg::Cluster>();
        assert_eq!(cnpg.name, "clusters.postgresql.cnpg.io");
        assert_eq!(
            (cnpg.group.as_str(), cnpg.version.as_str()),
            ("postgresql.cnpg.io", "v1")
        );
        let rabbitmq = ForeignCrd::of::<rabbitmq::RabbitmqCluster>();
        assert_eq!(rabbitmq.name, "rabbitmqclusters.rabbitmq.com");
        assert_eq!(rabbitmq.version, "v1beta1");
    }
}
