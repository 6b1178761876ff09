//! Fourth step of the pipeline: make the cluster hold exactly the built children, and nothing
//! else of this step writes: server-side apply and prune.
//!
//! Everything is written with server-side apply under one field manager
//! ([`FIELD_MANAGER`]), forced (the operator owns these objects; a hand edit of a field it
//! sets is reverted). Children no longer built are found by owner and label and deleted.
//! Before the first apply that leaves an autoscaled Deployment's replicas to its autoscaler,
//! [`replicas`] hands the field over. What the API server answers is returned as [`Applied`],
//! the only thing the status step computes a successful status from.

pub mod replicas;

use futures::future::BoxFuture;
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::{Api, Client, Resource, ResourceExt};
use serde::Serialize;

use crate::build::kinds::ChildKind;
use crate::build::meta;
use crate::build::{Children, child_kinds};
use crate::names::FIELD_MANAGER;
use crate::validate::Validated;

/// Why applying the children failed. The variant's name is the reason users see.
#[derive(Debug, thiserror::Error, strum::IntoStaticStr)]
pub enum Error {
    /// Handing a Deployment's replica count over to its HorizontalPodAutoscaler failed.
    #[error("handing the replicas of Deployment {name} over to its autoscaler: {source}")]
    ReplicasHandoverFailed {
        name: String,
        #[source]
        source: kube::Error,
    },
    /// Server-side applying a child failed.
    #[error("applying {kind} {name}: {source}")]
    ApplyFailed {
        kind: &'static str,
        name: String,
        #[source]
        source: kube::Error,
    },
    /// Listing or deleting children that are no longer wanted failed.
    #[error("pruning {kind} {name}: {source}")]
    PruneFailed {
        kind: &'static str,
        /// The object being deleted, or the label selector being listed.
        name: String,
        #[source]
        source: kube::Error,
    },
}

impl Error {
    /// CamelCase reason for conditions, Events and the failure metric: the variant's name.
    pub fn reason(&self) -> &'static str {
        self.into()
    }
}

/// The children as the API server answered their apply (with their status). Only [`apply`]
/// makes one, so a status computed from it is a status of what was applied.
#[derive(Debug)]
pub struct Applied {
    children: Children,
}

impl Applied {
    pub fn children(&self) -> &Children {
        &self.children
    }
}

/// Applies `children` of `system`, after handing over the replicas of the autoscaled
/// Deployments in `autoscaled` (their live state, see `observe::children`).
pub async fn apply(
    client: &Client,
    system: &Validated,
    autoscaled: &[Deployment],
    children: &Children,
) -> Result<Applied, Error> {
    replicas::hand_over(client, autoscaled).await?;
    let children = apply_each(client, &system.namespace, children).await?;
    Ok(Applied { children })
}

/// Deletes every child of `system` that is no longer built: each object of a child kind in
/// the namespace that carries the instance's labels and is controlled by this very
/// `PaymentSystem` (owner uid), but is not among `children` nor named in `keep`. The
/// generated Secrets are never built (they are created once, see `observe::secrets`): those
/// still wanted are in `keep`, with the children kept for the `PaymentSystem`'s life once
/// made (see `validate::kept_for_life`) and the model copies the live pod template mounts.
///
/// Found by ownership and label, never by a list of names, so a child an earlier version
/// created under another name is pruned as well. Objects that only carry the labels (a
/// user's copy) are not ours and are left alone.
pub async fn prune(
    client: &Client,
    system: &Validated,
    children: &Children,
    keep: &[String],
) -> Result<(), Error> {
    // Workloads first (reverse apply order), so nothing is left running against a Service,
    // claim or Secret that is about to go.
    for step in prune_each(client, system, children, keep).into_iter().rev() {
        step.await?;
    }
    Ok(())
}

/// The apply and the prune of every kind of the list.
macro_rules! apply_and_prune {
    ($( $(#[$doc:meta])* $field:ident: $kind:ty $([$foreign:ident])? $(=> $builder:path)?, )+) => {
        /// Server-side applies every child, kind by kind in list order, and returns them
        /// as the API server answered.
        async fn apply_each(
            client: &Client,
            namespace: &str,
            children: &Children,
        ) -> Result<Children, Error> {
            // Struct fields are evaluated in the order written: the list's order.
            Ok(Children {
                $( $field: apply_all(client, namespace, &children.$field).await?, )+
            })
        }

        /// The prune of each kind, in list order (futures do nothing until awaited).
        fn prune_each<'a>(
            client: &'a Client,
            system: &'a Validated,
            children: &'a Children,
            keep: &'a [String],
        ) -> Vec<BoxFuture<'a, Result<(), Error>>> {
            vec![ $( Box::pin(prune_kind(client, system, &children.$field, keep)), )+ ]
        }
    };
}

child_kinds!(apply_and_prune);

fn kind_of<K: Resource<DynamicType = ()>>() -> &'static str {
    // `kind` of the k8s-openapi and kube-derived types is a `&'static str` constant.
    match K::kind(&()) {
        std::borrow::Cow::Borrowed(kind) => kind,
        std::borrow::Cow::Owned(_) => "object",
    }
}

fn is_not_found(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 404)
}

/// Server-side applies `objects` (one kind), and returns them as the API server answered.
async fn apply_all<K: ChildKind>(
    client: &Client,
    namespace: &str,
    objects: &[K],
) -> Result<Vec<K>, Error> {
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let mut applied = Vec::with_capacity(objects.len());
    for object in objects {
        let name = object.meta().name.clone().unwrap_or_default();
        let result = api
            .patch(&name, &params, &Patch::Apply(with_type_meta(object)))
            .await
            .map_err(|source| Error::ApplyFailed {
                kind: kind_of::<K>(),
                name: name.clone(),
                source,
            })?;
        applied.push(result);
    }
    Ok(applied)
}

/// Server-side apply needs `apiVersion` and `kind` in the body; k8s-openapi types carry them
/// only in their serialised form, which this produces.
fn with_type_meta<K: Resource<DynamicType = ()> + Serialize>(object: &K) -> serde_json::Value {
    let mut value = serde_json::to_value(object).expect("k8s objects serialise");
    if let Some(map) = value.as_object_mut() {
        map.insert("apiVersion".into(), K::api_version(&()).into());
        map.insert("kind".into(), K::kind(&()).into());
    }
    value
}

/// Deletes the objects of kind `K` controlled by `system` and labelled as its children that
/// are neither `built` nor named in `keep`.
async fn prune_kind<K: ChildKind>(
    client: &Client,
    system: &Validated,
    built: &[K],
    keep: &[String],
) -> Result<(), Error> {
    let api: Api<K> = Api::namespaced(client.clone(), &system.namespace);
    let selector = meta::children_selector(&system.names);
    let existing = match api
        .list_metadata(&ListParams::default().labels(&selector))
        .await
    {
        Ok(existing) => existing,
        // The kind is not served (another operator's CRD not installed): nothing of it exists.
        Err(error) if is_not_found(&error) => return Ok(()),
        Err(source) => {
            return Err(Error::PruneFailed {
                kind: kind_of::<K>(),
                name: selector.clone(),
                source,
            });
        }
    };
    let wanted = |name: &str| {
        keep.iter().any(|kept| kept == name)
            || built
                .iter()
                .any(|object| object.meta().name.as_deref() == Some(name))
    };
    for object in existing {
        let controlled = object
            .owner_references()
            .iter()
            .any(|owner| owner.uid == system.owner.uid && owner.controller == Some(true));
        let name = object.name_any();
        if controlled && !wanted(&name) && object.metadata.deletion_timestamp.is_none() {
            delete::<K>(client, &system.namespace, &name).await?;
        }
    }
    Ok(())
}

/// Deletes `name`; an object already gone is fine.
async fn delete<K: ChildKind>(client: &Client, namespace: &str, name: &str) -> Result<(), Error> {
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    match api.delete(name, &DeleteParams::background()).await {
        Ok(_) => Ok(()),
        Err(error) if is_not_found(&error) => Ok(()),
        Err(source) => Err(Error::PruneFailed {
            kind: kind_of::<K>(),
            name: name.to_owned(),
            source,
        }),
    }
}
