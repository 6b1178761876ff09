//! The Secrets a `PaymentSystem` reads: those the operator generates for it (created once when
//! absent, never updated, so a reconcile never rotates a credential clients or a database
//! already hold) and those it references (the user's, and those another operator generates
//! for an operated dependency).

use k8s_openapi::api::core::v1::Secret;
use kube::api::PostParams;
use kube::{Api, Client, ResourceExt};

use super::{Error, SecretData};
use crate::crd::PaymentSystem;
use crate::names::{GeneratedSecret, Names, Server};

/// Secrets the operator generates for this resource (created once if absent).
pub fn generated_secrets(ps: &PaymentSystem) -> Vec<(GeneratedSecret, String)> {
    let names = Names::new(&ps.name_any());
    let mut generated = Vec::new();
    if ps.spec.payments_api.auth.secret_name.is_none() {
        generated.push(GeneratedSecret::ApiKey);
    }
    if ps.spec.rabbitmq.managed.is_some() {
        generated.push(GeneratedSecret::Credentials(Server::RabbitMq));
    }
    if ps.spec.database.managed.is_some() {
        generated.push(GeneratedSecret::Credentials(Server::Postgres));
    }
    if ps
        .spec
        .data_feed
        .as_ref()
        .is_some_and(|feed| feed.key_secret.is_none())
    {
        generated.push(GeneratedSecret::FeedKey);
    }
    let webhooks = &ps.spec.webhooks;
    if webhooks.enabled && webhooks.secrets_key_secret.is_none() {
        generated.push(GeneratedSecret::WebhooksKey);
    }
    generated
        .into_iter()
        .map(|secret| (secret, names.generated(secret)))
        .collect()
}

/// Secrets the resource reads but never writes: the user's, and those another operator
/// generates for an operated dependency (absent until that operator has made them).
pub fn referenced_secrets(ps: &PaymentSystem) -> Vec<String> {
    let spec = &ps.spec;
    let names = Names::new(&ps.name_any());
    let operated = [
        spec.rabbitmq
            .cluster_operator
            .as_ref()
            .map(|_| names.operated_secret(Server::RabbitMq)),
        spec.database
            .cloud_native_pg
            .as_ref()
            .map(|_| names.operated_secret(Server::Postgres)),
    ];
    let mut names: Vec<String> = [&spec.rabbitmq.external, &spec.database.external]
        .into_iter()
        .flatten()
        .map(|external| external.secret_name.clone())
        .chain(spec.payments_api.auth.secret_name.clone())
        .chain(
            spec.data_feed
                .as_ref()
                .and_then(|feed| feed.key_secret.as_ref())
                .map(|key| key.secret_name.clone()),
        )
        .chain(
            spec.webhooks
                .secrets_key_secret
                .as_ref()
                .filter(|_| spec.webhooks.enabled)
                .map(|key| key.secret_name.clone()),
        )
        .chain(operated.into_iter().flatten())
        .collect();
    names.sort();
    names.dedup();
    names
}

fn read_failed(name: &str) -> impl FnOnce(kube::Error) -> Error + '_ {
    move |source| Error::SecretReadFailed {
        name: name.to_owned(),
        source,
    }
}

fn is_conflict(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 409)
}

/// Creates each Secret the operator generates for `ps` unless it exists (`make` builds one
/// with fresh values), and returns the data of all of them (existing ones untouched).
pub async fn ensure_generated(
    client: &Client,
    ps: &PaymentSystem,
    make: impl Fn(GeneratedSecret) -> Secret,
) -> Result<SecretData, Error> {
    let namespace = ps.namespace().unwrap_or_default();
    let api: Api<Secret> = Api::namespaced(client.clone(), &namespace);
    let mut data = SecretData::new();
    for (generated, name) in generated_secrets(ps) {
        let secret = match api.get_opt(&name).await.map_err(read_failed(&name))? {
            Some(existing) => existing,
            None => create_once(&api, &make(generated), &name).await?,
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
pub async fn read_referenced(client: &Client, ps: &PaymentSystem) -> Result<SecretData, Error> {
    let namespace = ps.namespace().unwrap_or_default();
    let api: Api<Secret> = Api::namespaced(client.clone(), &namespace);
    let mut data = SecretData::new();
    for name in referenced_secrets(ps) {
        if let Some(secret) = api.get_opt(&name).await.map_err(read_failed(&name))? {
            data.insert(name, secret.data.unwrap_or_default());
        }
    }
    Ok(data)
}
