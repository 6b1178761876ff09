//! The resources other operators run servers from: a CloudNativePG `Cluster`, a
//! `RabbitmqCluster`. Their pods, Services and volumes are those operators' business; paysys
//! only says how many instances, how much storage, and who owns the resource.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::meta;
use crate::crd::DeletionPolicy;
use crate::foreign::cnpg::{Cluster, ClusterSpec, ClusterStorage};
use crate::foreign::rabbitmq::{Persistence, RabbitmqCluster, RabbitmqClusterSpec};
use crate::validate::{Operated, Validated};

/// The `Cluster` CloudNativePG runs PostgreSQL from, if the database is `cloudNativePG`.
pub fn cnpg_clusters(system: &Validated) -> Vec<Cluster> {
    let Some(operated) = system.database.operated() else {
        return Vec::new();
    };
    vec![Cluster {
        metadata: metadata(system, operated),
        spec: ClusterSpec {
            instances: operated.replicas,
            image_name: operated.image.clone(),
            storage: ClusterStorage {
                size: operated.storage.size.clone(),
                storage_class: operated.storage.storage_class_name.clone(),
            },
            resources: operated.resources.clone(),
        },
        status: None,
    }]
}

/// The `RabbitmqCluster`, if the broker is `clusterOperator`.
pub fn rabbitmq_clusters(system: &Validated) -> Vec<RabbitmqCluster> {
    let Some(operated) = system.rabbitmq.operated() else {
        return Vec::new();
    };
    vec![RabbitmqCluster {
        metadata: metadata(system, operated),
        spec: RabbitmqClusterSpec {
            replicas: operated.replicas,
            image: operated.image.clone(),
            resources: operated.resources.clone(),
            persistence: Persistence {
                storage: operated.storage.size.clone(),
                storage_class_name: operated.storage.storage_class_name.clone(),
            },
        },
        status: None,
    }]
}

/// The usual labels; the owner reference only with `deletionPolicy: Delete`, so that by
/// default garbage collection never deletes the data with the `PaymentSystem`.
fn metadata(system: &Validated, operated: &Operated) -> ObjectMeta {
    let mut metadata =
        meta::object_meta(system, operated.server.component(), operated.name.clone());
    if operated.deletion_policy == DeletionPolicy::Retain {
        metadata.owner_references = None;
    }
    metadata
}
