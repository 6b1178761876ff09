//! Resolution against the Secrets read from the cluster: does each referenced Secret hold the
//! keys the pods will read, and are they what the pods expect?

use super::error::ValidationError;
use super::model::{
    AUTH_API_KEYS, AUTH_JWT_PUBLIC_KEY, AUTH_JWT_SECRET, Auth, GENERATED_API_KEYS_FILE,
    GENERATED_FEED_KEY, JwtKey,
};
use crate::crd::{DataFeedSpec, JwtAlgorithm, PaymentSystemSpec, WEBHOOKS_KEY, WebhooksSpec};
use crate::names::Names;
use crate::observe::SecretData;

pub(super) fn auth(
    names: &Names,
    spec: &PaymentSystemSpec,
    secrets: &SecretData,
) -> Result<Auth, ValidationError> {
    let auth = &spec.payments_api.auth;
    let Some(secret_name) = &auth.secret_name else {
        let secret_name = names.api_key();
        require_key(secrets, &secret_name, GENERATED_API_KEYS_FILE)?;
        return Ok(Auth::Generated { secret_name });
    };
    let data = secrets
        .get(secret_name)
        .ok_or_else(|| ValidationError::SecretNotFound(secret_name.clone()))?;
    let jwt = match &auth.jwt {
        None => None,
        Some(jwt) => {
            let key = match (&jwt.jwks_url, jwt.algorithm) {
                // checks.rs refused HS256 with a JWKS.
                (Some(url), _) => JwtKey::Jwks(url.clone()),
                (None, JwtAlgorithm::HS256) => JwtKey::SecretKey(AUTH_JWT_SECRET),
                (None, JwtAlgorithm::RS256 | JwtAlgorithm::ES256) => {
                    JwtKey::SecretKey(AUTH_JWT_PUBLIC_KEY)
                }
            };
            if let JwtKey::SecretKey(key) = key {
                require_key(secrets, secret_name, key)?;
            }
            Some((jwt.clone(), key))
        }
    };
    let api_keys = data.contains_key(AUTH_API_KEYS);
    if !api_keys && jwt.is_none() {
        return Err(ValidationError::SecretKeyMissing {
            secret: secret_name.clone(),
            key: AUTH_API_KEYS.into(),
        });
    }
    Ok(Auth::User {
        secret_name: secret_name.clone(),
        api_keys,
        jwt,
    })
}

/// The Secret and key of the data feed's Fernet key (the generated one unless the spec names
/// one), checked to hold a Fernet key.
pub(super) fn feed_key(
    names: &Names,
    feed: &DataFeedSpec,
    secrets: &SecretData,
) -> Result<(String, String), ValidationError> {
    let (key_secret, key) = match &feed.key_secret {
        Some(reference) => (reference.secret_name.clone(), reference.key.clone()),
        None => (names.feed_key(), GENERATED_FEED_KEY.to_owned()),
    };
    require_key(secrets, &key_secret, &key)?;
    // Checked here so a wrong key is reported now, not by a failed export hours later.
    if !is_fernet_key(&secrets[&key_secret][&key].0) {
        return Err(ValidationError::SecretKeyInvalid {
            secret: key_secret,
            key,
            problem: "is not a Fernet key (32 bytes in url-safe base64, as made by \
                      `paysys-feed keygen`)",
        });
    }
    Ok((key_secret, key))
}

/// The Secret and key of the webhook secrets key (the generated one unless the spec names
/// one), checked to be what the payments API reads from `WEBHOOK_SECRETS_KEY`: an API that
/// would refuse to start is reported here instead.
pub(super) fn webhooks_key(
    names: &Names,
    webhooks: &WebhooksSpec,
    secrets: &SecretData,
) -> Result<(String, String), ValidationError> {
    let (key_secret, key) = match &webhooks.secrets_key_secret {
        Some(reference) => (reference.secret_name.clone(), reference.key.clone()),
        None => (names.webhooks_key(), WEBHOOKS_KEY.to_owned()),
    };
    require_key(secrets, &key_secret, &key)?;
    if !is_aes_key(&secrets[&key_secret][&key].0) {
        return Err(ValidationError::SecretKeyInvalid {
            secret: key_secret,
            key,
            problem: "is not a webhook secrets key (32 bytes in standard base64, as made by \
                      `openssl rand -base64 32`)",
        });
    }
    Ok((key_secret, key))
}

/// 32 bytes in standard base64, surrounding whitespace allowed (the API trims it too).
fn is_aes_key(value: &[u8]) -> bool {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(value.trim_ascii())
        .is_ok_and(|bytes| bytes.len() == 32)
}

/// 32 bytes in url-safe base64. Surrounding whitespace (the newline `keygen > file` leaves) is
/// allowed: the export trims it too.
fn is_fernet_key(value: &[u8]) -> bool {
    use base64::Engine as _;
    let text = value.trim_ascii();
    base64::engine::general_purpose::URL_SAFE
        .decode(text)
        .is_ok_and(|bytes| bytes.len() == 32)
}

pub(super) fn require_key(
    secrets: &SecretData,
    secret: &str,
    key: &str,
) -> Result<(), ValidationError> {
    let data = secrets
        .get(secret)
        .ok_or_else(|| ValidationError::SecretNotFound(secret.into()))?;
    match data.get(key) {
        Some(value) if !value.0.is_empty() => Ok(()),
        _ => Err(ValidationError::SecretKeyMissing {
            secret: secret.into(),
            key: key.into(),
        }),
    }
}
