//! The one list of child kinds: every kind of object the operator applies for a
//! `PaymentSystem`.
//!
//! [`child_kinds!`] turns the list into everything that must agree on it, so none of them can
//! forget a kind:
//! - [`Children`], the builders' output, one `Vec` per kind;
//! - [`Children::apply`]: server-side apply, kind by kind **in list order** (so the list is also
//!   the dependency order: what a pod mounts before the pod, the pod before its budget);
//! - [`Children::prune`]: deletion by owner uid and instance label of what is no longer built,
//!   **in reverse list order** (workloads go before what they use);
//! - [`Children::owns`]: one watch per kind, so a deleted or edited child is put back;
//! - [`Children::kinds`], from which [`crate::rbac::required`] grants each kind's verbs (and the
//!   Helm chart is checked against that).
//!
//! Adding a kind is a line here and the builder that fills its field (see
//! `docs/architecture.md`, "How to add a child kind"). A kind must be namespaced and have a
//! Rust type (k8s-openapi, or `#[derive(CustomResource)]` for another operator's CRD).
//!
//! Generated Secrets are children too, but they are created once and never applied (see
//! [`crate::apply::ensure_generated_secrets`]), so they are not in this list.

use std::borrow::Cow;
use std::fmt::Debug;

use futures::future::BoxFuture;
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{ApiResource, ObjectMeta, PartialObjectMeta};
use kube::core::error_boundary::DeserializeGuard;
use kube::runtime::{Controller, watcher};
use kube::{Client, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::apply;
use crate::controller::Scope;
use crate::crd::PaymentSystem;
use crate::error::Error;
use crate::foreign::cnpg::Cluster;
use crate::foreign::rabbitmq::RabbitmqCluster;
use crate::foreign::{self, ForeignCrd};
use crate::validate::Validated;
use crate::watch;

/// What a type must be to serve as a child kind: a namespaced object with static type
/// information that serialises for server-side apply, can be watched, and compares (the
/// builders' tests compare children).
pub trait ChildKind:
    Resource<DynamicType = (), Scope = NamespaceResourceScope>
    + Clone
    + Debug
    + PartialEq
    + Serialize
    + DeserializeOwned
    + Send
    + Sync
    + 'static
{
}

impl<K> ChildKind for K where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + Debug
        + PartialEq
        + Serialize
        + DeserializeOwned
        + Send
        + Sync
        + 'static
{
}

/// Declares the child kinds, in apply order: `field: Type`, one per line.
macro_rules! child_kinds {
    ($( $(#[$doc:meta])* $field:ident: $kind:ty, )+) => {
        /// Every object the operator applies for one `PaymentSystem`, one field per child
        /// kind (generated Secrets are created separately, once, see
        /// [`crate::build::secrets`]).
        #[derive(Debug, Clone, PartialEq, Default)]
        pub struct Children {
            $( $(#[$doc])* pub $field: Vec<$kind>, )+
        }

        impl Children {
            /// Server-side applies every child, kind by kind in list order, and returns them
            /// as the API server answered (the Deployments' status feeds the status step).
            pub async fn apply(&self, client: &Client, namespace: &str) -> Result<Children, Error> {
                // Struct fields are evaluated in the order written: the list's order.
                Ok(Children {
                    $( $field: apply::apply_all(client, namespace, &self.$field).await?, )+
                })
            }

            /// Deletes every child of `system` that is not in `self` nor named in `keep`,
            /// kind by kind in reverse list order.
            pub async fn prune(
                &self,
                client: &Client,
                system: &Validated,
                keep: &[String],
            ) -> Result<(), Error> {
                let wanted = |mut names: Vec<String>| {
                    names.extend_from_slice(keep);
                    names
                };
                // Futures do nothing until awaited: built in list order, run in reverse.
                let steps: Vec<BoxFuture<'_, Result<(), Error>>> = vec![
                    $( Box::pin(apply::prune_kind::<$kind>(client, system, wanted(names_of(&self.$field)))), )+
                ];
                for step in steps.into_iter().rev() {
                    step.await?;
                }
                Ok(())
            }

            /// Watches every child kind in `scope` with `config`: a change to a child
            /// reconciles its owner. Metadata only, each watch resuming on its own (see
            /// [`crate::watch`]).
            pub fn owns(
                controller: Controller<DeserializeGuard<PaymentSystem>>,
                scope: &Scope,
                client: &Client,
                config: watcher::Config,
            ) -> Controller<DeserializeGuard<PaymentSystem>> {
                $( let controller = watch_kind::<$kind>(controller, scope, client, config.clone()); )+
                controller
            }

            /// Every child kind, in list order.
            pub fn kinds() -> Vec<ApiResource> {
                vec![ $( ApiResource::erase::<$kind>(&()), )+ ]
            }

            /// The kind and metadata of every child, in list order.
            pub fn metas(&self) -> Vec<(Cow<'static, str>, &ObjectMeta)> {
                let mut metas = Vec::new();
                $(
                    metas.extend(
                        self.$field
                            .iter()
                            .map(|object| (<$kind as Resource>::kind(&()), object.meta())),
                    );
                )+
                metas
            }
        }
    };
}

child_kinds! {
    /// Configuration, before the pods that mount it (a pod started without its ConfigMap
    /// sits in ContainerCreating).
    config_maps: ConfigMap,
    /// Storage of the managed servers and of the data feed, before the pods that mount it.
    persistent_volume_claims: PersistentVolumeClaim,
    /// Before the workloads, so no pod ever runs unprotected.
    network_policies: NetworkPolicy,
    /// Servers run by other operators, before the services that connect to them. Optional
    /// kinds: their CRDs may be absent (see [`crate::foreign`]).
    cnpg_clusters: Cluster,
    rabbitmq_clusters: RabbitmqCluster,
    services: Service,
    deployments: Deployment,
    /// The data feed's export, after the database it reads and the claim it writes to.
    cron_jobs: CronJob,
    /// Once there are pods to guard.
    pod_disruption_budgets: PodDisruptionBudget,
    /// After the Deployments they scale (an autoscaler of a missing target only complains).
    horizontal_pod_autoscalers: HorizontalPodAutoscaler,
}

/// A built-in kind is watched as owned (a change reconciles the controlling `PaymentSystem`);
/// a foreign kind through [`foreign::watch`], which survives its CRD being absent.
/// Watches one child kind: a kind of another operator's CRD through `foreign::watch` (the
/// CRD may be missing), every other kind by metadata through the resilient watch.
fn watch_kind<K: ChildKind>(
    controller: Controller<DeserializeGuard<PaymentSystem>>,
    scope: &Scope,
    client: &Client,
    config: watcher::Config,
) -> Controller<DeserializeGuard<PaymentSystem>> {
    if ForeignCrd::of_kind::<K>().is_some() {
        foreign::watch::<K>(controller, scope, client, config)
    } else {
        controller.owns_stream(watch::children(
            scope.api::<PartialObjectMeta<K>>(client),
            &config,
        ))
    }
}

fn names_of<K: Resource>(objects: &[K]) -> Vec<String> {
    objects
        .iter()
        .filter_map(|object| object.meta().name.clone())
        .collect()
}
