//! CloudNativePG's `postgresql.cnpg.io/v1` `Cluster`: only the fields paysys sets or reads
//! (server-side apply leaves the others to their defaults and to other managers).

use k8s_openapi::api::core::v1::ResourceRequirements;
use kube::CustomResource;
use serde::{Deserialize, Serialize};

use super::ForeignCondition;

/// The fields of a CloudNativePG `Cluster` that paysys sets.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[kube(
    group = "postgresql.cnpg.io",
    version = "v1",
    kind = "Cluster",
    plural = "clusters",
    namespaced,
    status = "ClusterStatus",
    schema = "disabled",
    derive = "PartialEq"
)]
#[serde(rename_all = "camelCase", default)]
pub struct ClusterSpec {
    pub instances: i32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_name: Option<String>,
    pub storage: ClusterStorage,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
}

/// `spec.storage` of a `Cluster`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", default)]
pub struct ClusterStorage {
    pub size: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub storage_class: Option<String>,
}

/// What paysys reads of a `Cluster`'s status (written by CloudNativePG).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", default)]
pub struct ClusterStatus {
    /// Human-readable phase, e.g. `Cluster in healthy state`, `Setting up primary`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ready_instances: Option<i32>,
    pub conditions: Vec<ForeignCondition>,
}
