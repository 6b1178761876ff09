//! Second step of the pipeline: every child object of a [`Validated`] system.
//!
//! Pure and synchronous: no client, no clock, no randomness, so the same input always gives
//! the same objects (server-side apply then has nothing to change) and every builder can be
//! tested from a small YAML resource. One module per kind of child.

mod config_map;
mod managed;
pub mod meta;
mod network_policy;
pub mod payments_api;
mod pdb;
pub mod pod;
mod risk_engine;
pub mod secrets;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;

use crate::names::Component;
use crate::validate::Validated;

/// Every object the operator applies for one `PaymentSystem` (generated Secrets are created
/// separately, once, see [`secrets`]).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Children {
    pub config_maps: Vec<ConfigMap>,
    pub persistent_volume_claims: Vec<PersistentVolumeClaim>,
    pub services: Vec<Service>,
    pub deployments: Vec<Deployment>,
    pub pod_disruption_budgets: Vec<PodDisruptionBudget>,
    pub network_policies: Vec<NetworkPolicy>,
}

/// Builds every child of `system`.
pub fn build(system: &Validated) -> Children {
    let mut children = Children {
        config_maps: vec![config_map::risk_rules(system)],
        ..Children::default()
    };
    for (component, connection) in [
        (Component::RabbitMq, &system.rabbitmq),
        (Component::Postgres, &system.database),
    ] {
        if let Some(server) = connection.managed() {
            let parts = managed::build(system, component, server);
            children.persistent_volume_claims.extend(parts.claim);
            children.services.push(parts.service);
            children.deployments.push(parts.deployment);
        }
    }
    children.services.push(payments_api::service(system));
    children.deployments.push(payments_api::deployment(system));
    children.deployments.push(risk_engine::deployment(system));
    children.pod_disruption_budgets = pdb::build(system);
    if system.spec.network_policy.enabled {
        children.network_policies = network_policy::build(system);
    }
    children
}
