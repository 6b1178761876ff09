//! Third step of the pipeline: make the cluster hold exactly the built children.
//!
//! Everything is written with server-side apply under one field manager, forced (the operator
//! owns these objects; a hand edit of a field it sets is reverted). Generated Secrets are the
//! exception: created once when absent, never applied, so they are never rotated. Children no
//! longer built are found by owner and label and deleted.

use k8s_openapi::api::core::v1::Secret;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, Resource, ResourceExt};
use serde::Serialize;

use crate::build::{meta, secrets};
use crate::children::{ChildKind, Children};
use crate::crd::PaymentSystem;
use crate::error::Error;
use crate::validate::{self, SecretData, Validated};

/// The one field manager of every write the operator makes.
pub const FIELD_MANAGER: &str = "paysys-operator";

fn kind_of<K: Resource<DynamicType = ()>>() -> &'static str {
    // `kind` of the k8s-openapi and kube-derived types is a `&'static str` constant.
    match K::kind(&()) {
        std::borrow::Cow::Borrowed(kind) => kind,
        std::borrow::Cow::Owned(_) => "object",
    }
}

fn read_failed(name: &str) -> impl FnOnce(kube::Error) -> Error + '_ {
    move |source| Error::SecretReadFailed {
        name: name.to_owned(),
        source,
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
) -> Result<SecretData, Error> {
    let namespace = ps.namespace().unwrap_or_default();
    let api: Api<Secret> = Api::namespaced(client.clone(), &namespace);
    let mut data = SecretData::new();
    for (generated, name) in validate::generated_secrets(ps) {
        let secret = match api.get_opt(&name).await.map_err(read_failed(&name))? {
            Some(existing) => existing,
            None => create_once(&api, &secrets::generate(ps, generated), &name).await?,
        };
        data.insert(name, secret.data.unwrap_or_default());
    }
    Ok(data)
}

/// Creates `secret`; if another writer created it meanwhile, keeps theirs.
async fn create_once(api: &Api<Secret>, secret: &Secret, name: &str) -> Result<Secret, Error> {
    match api.create(&PostParams::default(), secret).await {
        Ok(created) => Ok(created),
        Err(error) if is_conflict(&error) => api.get(name).await.map_err(read_failed(name)),
        Err(source) => Err(Error::SecretCreateFailed {
            name: name.to_owned(),
            source,
        }),
    }
}

/// Reads the user Secrets `ps` references; absent ones are left out (validation reports them).
pub async fn read_referenced_secrets(
    client: &Client,
    ps: &PaymentSystem,
) -> Result<SecretData, Error> {
    let namespace = ps.namespace().unwrap_or_default();
    let api: Api<Secret> = Api::namespaced(client.clone(), &namespace);
    let mut data = SecretData::new();
    for name in validate::referenced_secrets(ps) {
        if let Some(secret) = api.get_opt(&name).await.map_err(read_failed(&name))? {
            data.insert(name, secret.data.unwrap_or_default());
        }
    }
    Ok(data)
}

/// Server-side applies `objects` (one kind), and returns them as the API server answered.
pub(crate) async fn apply_all<K: ChildKind>(
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

/// Deletes every child of `system` that is no longer built: each object of a child kind in
/// the namespace that carries the instance's labels and is controlled by this very
/// `PaymentSystem` (owner uid), but is not among `children`. Generated Secrets are children
/// too; those named in `keep_secrets` stay, and so do the children named in `keep` (kept
/// for the `PaymentSystem`'s life once made, see [`crate::validate::kept_for_life`]).
///
/// Found by ownership and label, never by a list of names, so a child an earlier version
/// created under another name is pruned as well. Objects that only carry the labels (a
/// user's copy) are not ours and are left alone.
pub async fn prune(
    client: &Client,
    system: &Validated,
    children: &Children,
    keep_secrets: &[String],
    keep: &[String],
) -> Result<(), Error> {
    // Workloads first (reverse apply order), so nothing is left running against a Service,
    // claim or Secret that is about to go; Secrets last.
    children.prune(client, system, keep).await?;
    prune_kind::<Secret>(client, system, keep_secrets.to_vec()).await
}

/// Deletes the objects of kind `K` controlled by `system` and labelled as its children whose
/// names are not in `wanted`.
pub(crate) async fn prune_kind<K: ChildKind>(
    client: &Client,
    system: &Validated,
    wanted: Vec<String>,
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
