//! The RabbitMQ Cluster Operator's `rabbitmq.com/v1beta1` `RabbitmqCluster`: only the fields
//! paysys sets or reads.

use k8s_openapi::api::core::v1::ResourceRequirements;
use kube::CustomResource;
use serde::{Deserialize, Serialize};

use super::ForeignCondition;

/// The fields of a `RabbitmqCluster` that paysys sets.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[kube(
    group = "rabbitmq.com",
    version = "v1beta1",
    kind = "RabbitmqCluster",
    plural = "rabbitmqclusters",
    namespaced,
    status = "RabbitmqClusterStatus",
    schema = "disabled",
    derive = "PartialEq"
)]
#[serde(rename_all = "camelCase", default)]
pub struct RabbitmqClusterSpec {
    pub replicas: i32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    pub persistence: Persistence,
}

/// `spec.persistence` of a `RabbitmqCluster`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", default)]
pub struct Persistence {
    pub storage: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
}

/// What paysys reads of a `RabbitmqCluster`'s status (written by the Cluster Operator).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", default)]
pub struct RabbitmqClusterStatus {
    pub conditions: Vec<ForeignCondition>,
}
