//! Helpers shared by the operator's test files.
#![allow(dead_code)]

pub mod api_server;

use k8s_openapi::ByteString;
use paysys_operator::build::secrets;
use paysys_operator::crd::PaymentSystem;
use paysys_operator::names::GeneratedSecret;
use paysys_operator::observe::SecretData;
use paysys_operator::validate::{self, Validated};

/// A valid Fernet key (32 bytes, url-safe base64), as `paysys-feed keygen` prints one.
pub const FERNET_KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";

/// A valid webhook secrets key (32 bytes, standard base64), as `openssl rand -base64 32`
/// prints one.
pub const WEBHOOKS_KEY: &str = "d2ViaG9va3Mtc2VjcmV0cy1rZXktMzItYnl0ZXMhISE=";

/// A `PaymentSystem` named `shop` in namespace `payments` with `spec` (YAML), as the API
/// server would return it (uid, generation).
pub fn system(spec: &str) -> PaymentSystem {
    let spec = textwrap(spec);
    let yaml = format!(
        "apiVersion: paysys.io/v1alpha1\nkind: PaymentSystem\nmetadata:\n  name: shop\n  namespace: payments\n  uid: 0b7a3f4e-1111-2222-3333-444455556666\n  generation: 1\nspec:\n{spec}"
    );
    serde_norway::from_str(&yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}"))
}

fn textwrap(spec: &str) -> String {
    let spec = spec.trim_matches('\n');
    if spec.trim().is_empty() {
        return "  {}\n".into();
    }
    spec.lines().map(|line| format!("  {line}\n")).collect()
}

/// The Secrets a cluster would hold for `ps`: its generated Secrets with fixed tokens, plus
/// the user Secrets given as `(name, [(key, value)])`.
pub fn secrets_for(ps: &PaymentSystem, user: &[(&str, &[(&str, &str)])]) -> SecretData {
    let mut data = SecretData::new();
    for (secret, name) in paysys_operator::observe::secrets::generated_secrets(ps) {
        let token = match secret {
            GeneratedSecret::FeedKey => FERNET_KEY,
            GeneratedSecret::WebhooksKey => WEBHOOKS_KEY,
            _ => "0123456789abcdef0123456789abcdef",
        };
        let secret = secrets::template(ps, secret, token);
        data.insert(name, secret.data.unwrap_or_default());
    }
    for (name, entries) in user {
        data.insert(
            name.to_string(),
            entries
                .iter()
                .map(|(key, value)| (key.to_string(), ByteString(value.as_bytes().to_vec())))
                .collect(),
        );
    }
    data
}

/// `ps` validated against its generated Secrets and `user` Secrets.
pub fn validated(ps: &PaymentSystem, user: &[(&str, &[(&str, &str)])]) -> Validated {
    validate::validate(ps, &secrets_for(ps, user)).expect("valid")
}
