//! Third step of the pipeline: make the cluster hold exactly the built children.
//!
//! Everything is written with server-side apply under one field manager, forced (the operator
//! owns these objects; a hand edit of a field it sets is reverted). Generated Secrets are the
//! exception: created once when absent, never applied, so they are never rotated. Children no
//! longer built are found by owner and label and deleted.

use std::fmt::Debug;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Secret, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::build::{Children, meta, secrets};
use crate::crd::PaymentSystem;
use crate::validate::{self, SecretData, Validated};

/// The one field manager of every write the operator makes.
pub const FIELD_MANAGER: &str = "paysys-operator";

/// A failed API call, with what it was doing.
#[derive(Debug, thiserror::Error)]
#[error("{action} {kind} {name}: {source}")]
pub struct ApplyError {
    pub action: &'static str,
    pub kind: &'static str,
    pub name: String,
    #[source]
    pub source: kube::Error,
}

fn failed<'a, K: Resource<DynamicType = ()>>(
    action: &'static str,
    name: &'a str,
) -> impl FnOnce(kube::Error) -> ApplyError + 'a {
    move |source| ApplyError {
        action,
        kind: kind_of::<K>(),
        name: name.to_owned(),
        source,
    }
}

fn kind_of<K: Resource<DynamicType = ()>>() -> &'static str {
    // `kind` of the k8s-openapi types is a `&'static str` constant.
    match K::kind(&()) {
        std::borrow::Cow::Borrowed(kind) => kind,
        std::borrow::Cow::Owned(_) => "object",
    }
}

fn is_not_found(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 404)
}

fn is_conflict(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 409)
}

/// Creates each Secret the operator generates for `ps` unless it exists, and returns the data
/// of all of them (existing ones untouched).
pub async fn ensure_generated_secrets(
    client: &Client,
    ps: &PaymentSystem,
) -> Result<SecretData, ApplyError> {
    let namespace = ps.namespace().unwrap_or_default();
    let api: Api<Secret> = Api::namespaced(client.clone(), &namespace);
    let mut data = SecretData::new();
    for (component, name) in validate::generated_secrets(ps) {
        let secret = match api
            .get_opt(&name)
            .await
            .map_err(failed::<Secret>("get", &name))?
        {
            Some(existing) => existing,
            None => create_once(&api, &secrets::generate(ps, component), &name).await?,
        };
        data.insert(name, secret.data.unwrap_or_default());
    }
    Ok(data)
}

/// Creates `secret`; if another writer created it meanwhile, keeps theirs.
async fn create_once(api: &Api<Secret>, secret: &Secret, name: &str) -> Result<Secret, ApplyError> {
    match api.create(&PostParams::default(), secret).await {
        Ok(created) => Ok(created),
        Err(error) if is_conflict(&error) => {
            api.get(name).await.map_err(failed::<Secret>("get", name))
        }
        Err(error) => Err(failed::<Secret>("create", name)(error)),
    }
}

/// Reads the user Secrets `ps` references; absent ones are left out (validation reports them).
pub async fn read_referenced_secrets(
    client: &Client,
    ps: &PaymentSystem,
) -> Result<SecretData, ApplyError> {
    let namespace = ps.namespace().unwrap_or_default();
    let api: Api<Secret> = Api::namespaced(client.clone(), &namespace);
    let mut data = SecretData::new();
    for name in validate::referenced_secrets(&ps.spec) {
        if let Some(secret) = api
            .get_opt(&name)
            .await
            .map_err(failed::<Secret>("get", &name))?
        {
            data.insert(name, secret.data.unwrap_or_default());
        }
    }
    Ok(data)
}

/// Server-side applies every child, in dependency order, and returns the Deployments as the
/// API server answered (their status is the input of the status step).
pub async fn apply(
    client: &Client,
    namespace: &str,
    children: &Children,
) -> Result<Vec<Deployment>, ApplyError> {
    // No `..`: a new kind of child does not compile until it is applied here.
    let Children {
        config_maps,
        persistent_volume_claims,
        services,
        deployments,
        pod_disruption_budgets,
        network_policies,
    } = children;
    // Configuration and storage before the workloads that mount them (a pod started without
    // its ConfigMap or claim would sit in ContainerCreating); NetworkPolicies before the
    // workloads so no pod ever runs unprotected; budgets last, once there are pods to guard.
    apply_all(client, namespace, config_maps).await?;
    apply_all(client, namespace, persistent_volume_claims).await?;
    apply_all(client, namespace, network_policies).await?;
    apply_all(client, namespace, services).await?;
    let applied = apply_all(client, namespace, deployments).await?;
    apply_all(client, namespace, pod_disruption_budgets).await?;
    Ok(applied)
}

async fn apply_all<K>(client: &Client, namespace: &str, objects: &[K]) -> Result<Vec<K>, ApplyError>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + Debug
        + Serialize
        + DeserializeOwned,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let mut applied = Vec::with_capacity(objects.len());
    for object in objects {
        let name = object.meta().name.clone().unwrap_or_default();
        let result = api
            .patch(&name, &params, &Patch::Apply(with_type_meta(object)))
            .await
            .map_err(failed::<K>("apply", &name))?;
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

/// Deletes every child of `system` that is no longer built: each object of a child kind in
/// the namespace that carries the instance's labels and is controlled by this very
/// `PaymentSystem` (owner uid), but is not among `children`. Generated Secrets are children
/// too; those named in `keep_secrets` stay.
///
/// Found by ownership and label, never by a list of names, so a child an earlier version
/// created under another name is pruned as well. Objects that only carry the labels (a
/// user's copy) are not ours and are left alone.
pub async fn prune(
    client: &Client,
    system: &Validated,
    children: &Children,
    keep_secrets: &[String],
) -> Result<(), ApplyError> {
    // No `..`: a new kind of child does not compile until it is pruned here.
    let Children {
        config_maps,
        persistent_volume_claims,
        services,
        deployments,
        pod_disruption_budgets,
        network_policies,
    } = children;
    // Workloads first, so nothing is left running against a Service, claim or Secret that
    // is about to go.
    prune_kind::<Deployment>(client, system, &names_of(deployments)).await?;
    prune_kind::<PodDisruptionBudget>(client, system, &names_of(pod_disruption_budgets)).await?;
    prune_kind::<Service>(client, system, &names_of(services)).await?;
    prune_kind::<NetworkPolicy>(client, system, &names_of(network_policies)).await?;
    prune_kind::<PersistentVolumeClaim>(client, system, &names_of(persistent_volume_claims))
        .await?;
    prune_kind::<ConfigMap>(client, system, &names_of(config_maps)).await?;
    prune_kind::<Secret>(client, system, keep_secrets).await
}

fn names_of<K: Resource>(objects: &[K]) -> Vec<String> {
    objects
        .iter()
        .filter_map(|object| object.meta().name.clone())
        .collect()
}

/// Deletes the objects of kind `K` controlled by `system` and labelled as its children whose
/// names are not in `wanted`.
async fn prune_kind<K>(
    client: &Client,
    system: &Validated,
    wanted: &[String],
) -> Result<(), ApplyError>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + Debug
        + DeserializeOwned,
{
    let api: Api<K> = Api::namespaced(client.clone(), &system.namespace);
    let selector = meta::children_selector(&system.names);
    let existing = api
        .list_metadata(&ListParams::default().labels(&selector))
        .await
        .map_err(failed::<K>("list", &selector))?;
    for object in existing {
        let controlled = object
            .owner_references()
            .iter()
            .any(|owner| owner.uid == system.owner.uid && owner.controller == Some(true));
        let name = object.name_any();
        if controlled && !wanted.contains(&name) && object.metadata.deletion_timestamp.is_none() {
            delete::<K>(client, &system.namespace, &name).await?;
        }
    }
    Ok(())
}

/// Deletes `name`; an object already gone is fine.
async fn delete<K>(client: &Client, namespace: &str, name: &str) -> Result<(), ApplyError>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + Debug
        + DeserializeOwned,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    match api.delete(name, &DeleteParams::background()).await {
        Ok(_) => Ok(()),
        Err(error) if is_not_found(&error) => Ok(()),
        Err(error) => Err(failed::<K>("delete", name)(error)),
    }
}
