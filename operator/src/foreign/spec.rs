//! The parts of the `PaymentSystem` spec that hand a dependency to another operator:
//! `database.cloudNativePG` and `rabbitmq.clusterOperator`.

use k8s_openapi::api::core::v1::ResourceRequirements;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A PostgreSQL cluster run by CloudNativePG: a primary and streaming replicas with automated
/// failover. The operator creates a `postgresql.cnpg.io/v1` `Cluster` named
/// `<name>-pg` and connects the payments API to its application Secret (`<name>-pg-app`).
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct CloudNativePgSpec {
    /// PostgreSQL instances: one primary, the others synchronous-capable replicas. Three
    /// survive the loss of one node with a replica left to fail over to.
    #[schemars(extend("x-kubernetes-validations" = [
        {"rule": "self >= 1", "message": "database.cloudNativePG.instances must be >= 1"}
    ]))]
    pub instances: i32,
    /// Each instance's volume.
    pub storage: VolumeSpec,
    /// PostgreSQL image (`imageName`); CloudNativePG's default when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_name: Option<String>,
    /// CPU and memory of each instance; CloudNativePG's default (none) when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// What deleting the `PaymentSystem` does to the cluster and its volumes.
    pub deletion_policy: DeletionPolicy,
}

impl Default for CloudNativePgSpec {
    fn default() -> Self {
        Self {
            instances: 3,
            storage: VolumeSpec::default(),
            image_name: None,
            resources: None,
            deletion_policy: DeletionPolicy::Retain,
        }
    }
}

/// A RabbitMQ cluster run by the RabbitMQ Cluster Operator. The operator creates a
/// `rabbitmq.com/v1beta1` `RabbitmqCluster` named `<name>-mq` and connects both services to its
/// default-user Secret (`<name>-mq-default-user`).
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct ClusterOperatorSpec {
    /// RabbitMQ nodes. Use an odd number, 3 or more: quorum queues need a majority.
    #[schemars(extend("x-kubernetes-validations" = [
        {"rule": "self >= 1", "message": "rabbitmq.clusterOperator.replicas must be >= 1"}
    ]))]
    pub replicas: i32,
    /// Each node's volume.
    pub storage: VolumeSpec,
    /// RabbitMQ image; the Cluster Operator's default when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// CPU and memory of each node; the Cluster Operator's default when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// What deleting the `PaymentSystem` does to the cluster and its volumes.
    pub deletion_policy: DeletionPolicy,
}

impl Default for ClusterOperatorSpec {
    fn default() -> Self {
        Self {
            replicas: 3,
            storage: VolumeSpec::default(),
            image: None,
            resources: None,
            deletion_policy: DeletionPolicy::Retain,
        }
    }
}

/// A volume per instance of an operated cluster.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct VolumeSpec {
    /// Requested size, e.g. `10Gi`.
    #[schemars(extend("x-kubernetes-validations" = [
        {"rule": "self.matches('^[0-9]+(\\\\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$')", "message": "storage.size must be a quantity such as 10Gi"}
    ]))]
    pub size: String,
    /// StorageClass; the cluster default when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
}

impl Default for VolumeSpec {
    fn default() -> Self {
        Self {
            size: "10Gi".into(),
            storage_class_name: None,
        }
    }
}

/// What happens to an operated cluster when its `PaymentSystem` is deleted.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema, Default)]
pub enum DeletionPolicy {
    /// The cluster (and its data) outlives the `PaymentSystem`: it carries no owner
    /// reference, so garbage collection leaves it alone; a `PaymentSystem` created again under
    /// the same name takes it back. Delete it by hand when the data is no longer wanted.
    #[default]
    Retain,
    /// The cluster is owned by the `PaymentSystem`: deleting one deletes the other, and the
    /// cluster's operator deletes its volumes.
    Delete,
}
