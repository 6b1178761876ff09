//! Second step of the pipeline: every child object of a [`Validated`] system.
//!
//! Pure and synchronous: no client, no clock, no randomness, so the same input always gives
//! the same objects (server-side apply then has nothing to change) and every builder can be
//! tested from a small YAML resource. One module per kind of child.

mod autoscaling;
mod config_map;
pub mod data_feed;
mod managed;
pub mod meta;
mod network_policy;
mod operated;
pub mod payments_api;
mod pdb;
pub mod pod;
mod risk_engine;
pub mod secrets;

pub use crate::children::Children;
use crate::validate::Validated;

/// Builds every child of `system`.
pub fn build(system: &Validated) -> Children {
    let mut children = Children {
        config_maps: vec![config_map::risk_rules(system)],
        ..Children::default()
    };
    for server in system.managed_servers() {
        let parts = managed::build(system, server);
        children.persistent_volume_claims.extend(parts.claim);
        children.services.push(parts.service);
        children.deployments.push(parts.deployment);
    }
    children
        .cnpg_clusters
        .extend(operated::cnpg_cluster(system));
    children
        .rabbitmq_clusters
        .extend(operated::rabbitmq_cluster(system));
    children.services.push(payments_api::service(system));
    children.deployments.push(payments_api::deployment(system));
    children.deployments.push(risk_engine::deployment(system));
    if let Some(feed) = &system.data_feed {
        let parts = data_feed::build(system, feed);
        children.persistent_volume_claims.extend(parts.claim);
        children.cron_jobs.push(parts.cron_job);
    }
    children.pod_disruption_budgets = pdb::build(system);
    children.horizontal_pod_autoscalers = autoscaling::build(system);
    if system.network_policies {
        children.network_policies = network_policy::build(system);
    }
    children
}
