//! Third step of the pipeline: every child object of a [`Validated`] system.
//!
//! Pure and synchronous: no client, no clock, no randomness (the generated Secrets' random
//! values are made in [`secrets`], called by `observe` only when a Secret is absent), so the
//! same input always gives the same objects (server-side apply then has nothing to change) and
//! every builder can be tested from a small YAML resource. One module per kind of child (or
//! per workload); the list of kinds, [`child_kinds!`], registers each kind's builders.

mod autoscaling;
mod config_map;
pub mod data_feed;
pub mod kinds;
mod managed;
pub mod meta;
mod model_copy;
mod network_policy;
mod operated;
pub mod payments_api;
mod pdb;
pub mod pod;
mod risk_engine;
pub mod secrets;
pub mod service_monitor;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Secret, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;

use self::kinds::declare_children;
use self::service_monitor::ServiceMonitor;
use crate::foreign::cnpg::Cluster;
use crate::foreign::rabbitmq::RabbitmqCluster;
use crate::validate::Validated;

/// The list of child kinds, in apply order, each row with the builders that fill it (see
/// [`kinds`] for the rows' form and what is generated from them). `child_kinds!(then)` expands
/// to `then! { rows }`.
macro_rules! child_kinds {
    ($then:ident) => {
        $then! {
            /// Configuration, before the pods that mount it (a pod started without its
            /// ConfigMap sits in ContainerCreating).
            config_maps: ConfigMap => config_map::build,
            /// The copies of risk models read from Secrets, before the pods that mount them.
            /// (The generated Secrets are created once by `observe` and never applied; the
            /// prune of this row keeps them by name while they are wanted.)
            secrets: Secret => model_copy::secrets,
            /// Storage of the managed servers and of the data feed, before the pods that mount
            /// it.
            persistent_volume_claims: PersistentVolumeClaim,
            /// Before the workloads, so no pod ever runs unprotected.
            network_policies: NetworkPolicy => network_policy::build,
            /// Servers run by other operators, before the services that connect to them.
            rabbitmq_clusters: RabbitmqCluster [foreign] => operated::rabbitmq_clusters,
            cnpg_clusters: Cluster [foreign] => operated::cnpg_clusters,
            /// The workloads' Services first (see `workloads`).
            services: Service => service_monitor::metrics_services,
            deployments: Deployment,
            /// The data feed's export, after the database it reads and the claim it writes to.
            cron_jobs: CronJob,
            /// Once there are pods to guard.
            pod_disruption_budgets: PodDisruptionBudget => pdb::build,
            /// After the Deployments they scale (an autoscaler of a missing target only
            /// complains).
            horizontal_pod_autoscalers: HorizontalPodAutoscaler => autoscaling::build,
            /// Prometheus Operator monitors of the services' metrics, once the Services exist.
            service_monitors: ServiceMonitor [foreign] => service_monitor::build,
        }
    };
}
pub(crate) use child_kinds;

child_kinds!(declare_children);

/// Builds every child of `system`: the workloads' parts, then each row's builders.
pub fn build(system: &Validated) -> Children {
    let mut children = workloads(system);
    children.build_listed(system);
    children
}

/// The parts of the workloads, built together per workload: each managed server's
/// Deployment, Service and claim, the paysys services' Deployments and the API's Service, and
/// the data feed's CronJob and claim.
fn workloads(system: &Validated) -> Children {
    let mut children = Children::default();
    for server in system.managed_servers() {
        let parts = managed::build(system, server);
        children.persistent_volume_claims.extend(parts.claim);
        children.services.push(parts.service);
        children.deployments.push(parts.deployment);
    }
    children.services.push(payments_api::service(system));
    children.deployments.push(payments_api::deployment(system));
    children.deployments.extend(risk_engine::deployment(system));
    if let Some(feed) = &system.data_feed {
        let parts = data_feed::build(system, feed);
        children.persistent_volume_claims.extend(parts.claim);
        children.cron_jobs.push(parts.cron_job);
    }
    children
}
