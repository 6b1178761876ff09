//! Secrets the operator generates: the API key, the managed servers' credentials, the data
//! feed's Fernet key and the webhook secrets key.
//!
//! They are created once, only if absent, and never updated, so a reconcile can never rotate
//! a credential clients or a database already hold. The templates are built here from the
//! random values passed in (see [`generate`] for the only randomness in the operator).

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::{Resource, ResourceExt};

use super::managed::{self, MANAGED_DATABASE, MANAGED_USER, RABBITMQ_CONF};
use super::meta;
use crate::crd::{PaymentSystem, WEBHOOKS_KEY};
use crate::names::{GeneratedSecret, Names, Server};
use crate::validate::{
    CREDENTIALS_URL, GENERATED_API_KEY, GENERATED_API_KEYS_FILE, GENERATED_FEED_KEY,
};

/// Principal of the generated API key (`API_KEYS_FILE` entry `default=<key>`).
pub const DEFAULT_PRINCIPAL: &str = "default";

/// The template of the generated Secret `secret` for `ps`, with fresh random values.
pub fn generate(ps: &PaymentSystem, secret: GeneratedSecret) -> Secret {
    let token = match secret {
        GeneratedSecret::FeedKey => random_fernet_key(),
        GeneratedSecret::WebhooksKey => random_webhooks_key(),
        GeneratedSecret::ApiKey | GeneratedSecret::Credentials(_) => random_token(),
    };
    template(ps, secret, &token)
}

/// A Fernet key as Python's `Fernet.generate_key()` makes it: 32 random bytes in url-safe
/// base64 with padding (44 characters).
fn random_fernet_key() -> String {
    use base64::Engine as _;
    let bytes: [u8; 32] = rand::random();
    base64::engine::general_purpose::URL_SAFE.encode(bytes)
}

/// An AES-256 key as the payments API reads `WEBHOOK_SECRETS_KEY`: 32 random bytes in
/// standard base64 (44 characters).
fn random_webhooks_key() -> String {
    use base64::Engine as _;
    let bytes: [u8; 32] = rand::random();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// 32 random bytes from the thread's CSPRNG, hex-encoded: URL-safe, so it can sit in a
/// connection URL without escaping.
fn random_token() -> String {
    let bytes: [u8; 32] = rand::random();
    hex::encode(bytes)
}

/// The generated Secret `secret` holding `token` (an API key, a password, a Fernet key or the
/// webhook secrets key).
pub fn template(ps: &PaymentSystem, secret: GeneratedSecret, token: &str) -> Secret {
    let names = Names::new(&ps.name_any());
    let namespace = ps.namespace().unwrap_or_default();
    let data = match secret {
        GeneratedSecret::ApiKey => api_key_data(token),
        GeneratedSecret::FeedKey => BTreeMap::from([(GENERATED_FEED_KEY.into(), token.into())]),
        GeneratedSecret::WebhooksKey => BTreeMap::from([(WEBHOOKS_KEY.into(), token.into())]),
        GeneratedSecret::Credentials(server @ Server::Postgres) => {
            let address = service_address(&names, server, &namespace);
            let url = format!("postgres://{MANAGED_USER}:{token}@{address}/{MANAGED_DATABASE}");
            credentials_data(token, url)
        }
        GeneratedSecret::Credentials(server @ Server::RabbitMq) => {
            let address = service_address(&names, server, &namespace);
            let url = format!("amqp://{MANAGED_USER}:{token}@{address}/%2f");
            let mut data = credentials_data(token, url);
            data.insert(RABBITMQ_CONF.into(), rabbitmq_conf(token));
            data
        }
    };
    Secret {
        metadata: ObjectMeta {
            name: Some(names.generated(secret)),
            namespace: Some(namespace),
            labels: Some(meta::labels(&names, secret.component())),
            owner_references: ps.controller_owner_ref(&()).map(|owner| vec![owner]),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".into()),
        data: Some(
            data.into_iter()
                .map(|(key, value)| (key, ByteString(value.into_bytes())))
                .collect(),
        ),
        ..Secret::default()
    }
}

/// `host:port` of a managed server's Service.
fn service_address(names: &Names, server: Server, namespace: &str) -> String {
    let (_, port) = managed::port_of(server);
    format!("{}.{namespace}.svc:{port}", names.workload(server))
}

fn api_key_data(key: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (GENERATED_API_KEY.into(), key.into()),
        (
            GENERATED_API_KEYS_FILE.into(),
            format!("{DEFAULT_PRINCIPAL}={key}\n"),
        ),
    ])
}

fn credentials_data(password: &str, url: String) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("username".into(), MANAGED_USER.into()),
        ("password".into(), password.into()),
        (CREDENTIALS_URL.into(), url),
    ])
}

/// The managed RabbitMQ's whole configuration (it replaces the image's `conf.d`): the
/// application user instead of the guest account, logs on the console only.
fn rabbitmq_conf(password: &str) -> String {
    format!(
        "listeners.tcp.default = 5672\n\
         default_user = {MANAGED_USER}\n\
         default_pass = {password}\n\
         loopback_users = none\n\
         log.console = true\n\
         log.file = false\n"
    )
}
