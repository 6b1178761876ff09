//! Who is calling: API keys and JWTs from the `Authorization` header.
//!
//! `Authorization: <credential>` or `Authorization: Bearer <credential>`, where the credential
//! is an API key or, when JWT is configured, a JWT. API keys are held only as SHA-256 hashes
//! and compared in constant time against every configured key; a JWT's algorithm is pinned
//! by configuration, `exp` is required, and `iss`/`aud` are checked when configured. The JWT
//! key is configured (a secret or a PEM public key) or comes from an identity provider's
//! JWKS ([`jwks`]). Neither keys nor tokens are ever logged or echoed.

pub mod jwks;

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use paysys_runtime::config::{self, ConfigError, Source};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Shortest API key accepted in configuration; anything shorter is guessable.
const MIN_KEY_LEN: usize = 16;
/// Shortest HS256 secret accepted (RFC 7518 asks for at least the hash size).
const MIN_HS256_SECRET_LEN: usize = 32;

/// The authenticated caller. Payments belong to the principal that created them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal(pub String);

/// Why a request was not authenticated; the label is used in metrics and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("missing Authorization header")]
    Missing,
    #[error("malformed Authorization header")]
    Malformed,
    #[error("unknown API key")]
    UnknownKey,
    #[error("invalid token: {0}")]
    InvalidToken(&'static str),
}

impl AuthError {
    pub fn label(self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::Malformed => "malformed",
            Self::UnknownKey => "unknown_key",
            Self::InvalidToken(reason) => reason,
        }
    }
}

/// Configured API keys: principal and SHA-256 of the key.
#[derive(Clone, Default)]
pub struct ApiKeys(Vec<(String, [u8; 32])>);

impl fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ApiKeys({} keys)", self.0.len())
    }
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

impl ApiKeys {
    /// Keys from `API_KEYS` and the file named by `API_KEYS_FILE`, both lists of
    /// `principal=key` separated by commas or newlines.
    pub fn from_source(source: &dyn Source) -> Result<Self, ConfigError> {
        let mut keys = Self::default();
        if let Some(list) = config::optional(source, "API_KEYS") {
            keys.add_list(&list)
                .map_err(|m| ConfigError::new("API_KEYS", m))?;
        }
        if let Some(path) = config::optional(source, "API_KEYS_FILE") {
            let list = std::fs::read_to_string(&path).map_err(|e| {
                ConfigError::new("API_KEYS_FILE", format!("cannot read {path}: {e}"))
            })?;
            keys.add_list(&list)
                .map_err(|m| ConfigError::new("API_KEYS_FILE", format!("{path}: {m}")))?;
        }
        Ok(keys)
    }

    fn add_list(&mut self, list: &str) -> Result<(), String> {
        for (index, entry) in list
            .split([',', '\n'])
            .map(str::trim)
            .filter(|entry| !entry.is_empty() && !entry.starts_with('#'))
            .enumerate()
        {
            // The message names the entry by position only: it must not echo the key.
            let (principal, key) = entry
                .split_once('=')
                .ok_or_else(|| format!("entry {} is not principal=key", index + 1))?;
            let (principal, key) = (principal.trim(), key.trim());
            if principal.is_empty() {
                return Err(format!("entry {} has an empty principal", index + 1));
            }
            if key.len() < MIN_KEY_LEN {
                return Err(format!(
                    "the key of '{principal}' is shorter than {MIN_KEY_LEN} characters"
                ));
            }
            self.0.push((principal.to_owned(), sha256(key.as_bytes())));
        }
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The principal owning `key`. Every configured hash is compared, in constant time, so
    /// the time taken says nothing about which key (or how much of one) matched.
    fn principal_of(&self, key: &str) -> Option<Principal> {
        let presented = sha256(key.as_bytes());
        let mut found = None;
        for (principal, hash) in &self.0 {
            if bool::from(hash.ct_eq(&presented)) {
                found = Some(principal);
            }
        }
        found.map(|p| Principal(p.clone()))
    }
}

/// JWT verification settings: one pinned algorithm and its key.
#[derive(Clone)]
pub struct JwtSettings {
    pub algorithm: Algorithm,
    key: VerificationKey,
    issuer: Option<String>,
    audience: Option<String>,
}

/// Where a token's key comes from.
#[derive(Clone)]
enum VerificationKey {
    /// The one configured key (HS256 secret, or PEM public key).
    Configured(DecodingKey),
    /// The identity provider's current keys, chosen by `kid`.
    Jwks(Arc<jwks::Jwks>),
}

impl JwtSettings {
    /// `JWT_ALGORITHM` (HS256, RS256 or ES256; unset disables JWT), with `JWT_SECRET` /
    /// `JWT_SECRET_FILE` for HS256, and for RS256/ES256 either `JWT_PUBLIC_KEY_FILE` (PEM) or
    /// `JWT_JWKS_URL` (see [`jwks::JwksSettings`]); and the optional `JWT_ISSUER` and
    /// `JWT_AUDIENCE`.
    pub fn from_source(source: &dyn Source) -> Result<Option<Self>, ConfigError> {
        let jwks = jwks::JwksSettings::from_source(source)?;
        let Some(name) = config::optional(source, "JWT_ALGORITHM") else {
            if jwks.is_some() {
                return Err(ConfigError::new(
                    "JWT_ALGORITHM",
                    "JWT_JWKS_URL needs JWT_ALGORITHM (RS256 or ES256): the algorithm is \
                     pinned here, never taken from a token or from the JWKS",
                ));
            }
            return Ok(None);
        };
        let algorithm = match name.trim() {
            "HS256" => Algorithm::HS256,
            "RS256" => Algorithm::RS256,
            "ES256" => Algorithm::ES256,
            other => {
                return Err(ConfigError::new(
                    "JWT_ALGORITHM",
                    format!("'{other}' is not supported (use HS256, RS256 or ES256)"),
                ));
            }
        };
        let key = match (algorithm, jwks) {
            (Algorithm::HS256, Some(_)) => {
                return Err(ConfigError::new(
                    "JWT_JWKS_URL",
                    "HS256 verifies with a shared secret, which no JWKS publishes: use RS256 \
                     or ES256 with JWT_JWKS_URL",
                ));
            }
            (Algorithm::HS256, None) => {
                VerificationKey::Configured(DecodingKey::from_secret(&hs256_secret(source)?))
            }
            (_, Some(settings)) => {
                if config::optional(source, "JWT_PUBLIC_KEY_FILE").is_some() {
                    return Err(ConfigError::new(
                        "JWT_PUBLIC_KEY_FILE",
                        "set JWT_PUBLIC_KEY_FILE or JWT_JWKS_URL, not both",
                    ));
                }
                let jwks = jwks::Jwks::new(settings, algorithm).map_err(|e| {
                    ConfigError::new("JWT_JWKS_URL", format!("cannot make its HTTP client: {e}"))
                })?;
                VerificationKey::Jwks(Arc::new(jwks))
            }
            (_, None) => {
                let path = config::required(source, "JWT_PUBLIC_KEY_FILE")?;
                let pem = std::fs::read(&path).map_err(|e| {
                    ConfigError::new("JWT_PUBLIC_KEY_FILE", format!("cannot read {path}: {e}"))
                })?;
                let parsed = if algorithm == Algorithm::RS256 {
                    DecodingKey::from_rsa_pem(&pem)
                } else {
                    DecodingKey::from_ec_pem(&pem)
                };
                VerificationKey::Configured(parsed.map_err(|e| {
                    ConfigError::new(
                        "JWT_PUBLIC_KEY_FILE",
                        format!("{path}: not a {name} public key: {e}"),
                    )
                })?)
            }
        };
        Ok(Some(Self {
            algorithm,
            key,
            issuer: config::optional(source, "JWT_ISSUER"),
            audience: config::optional(source, "JWT_AUDIENCE"),
        }))
    }

    /// The identity provider's keys, when they come from a JWKS.
    pub fn jwks(&self) -> Option<&Arc<jwks::Jwks>> {
        match &self.key {
            VerificationKey::Jwks(jwks) => Some(jwks),
            VerificationKey::Configured(_) => None,
        }
    }

    fn validation(&self) -> Validation {
        // Validation::new pins the accepted algorithm list to exactly this one, which is what
        // rejects `alg: none` and HS256-signed-with-the-public-key confusion.
        let mut validation = Validation::new(self.algorithm);
        validation.set_required_spec_claims(&["exp", "sub"]);
        validation.leeway = 30;
        match &self.issuer {
            Some(issuer) => validation.set_issuer(&[issuer]),
            None => validation.iss = None,
        }
        match &self.audience {
            Some(audience) => validation.set_audience(&[audience]),
            None => validation.validate_aud = false,
        }
        validation
    }
}

fn hs256_secret(source: &dyn Source) -> Result<Vec<u8>, ConfigError> {
    let (name, secret) = match config::optional(source, "JWT_SECRET") {
        Some(secret) => ("JWT_SECRET", secret),
        None => {
            let path = config::optional(source, "JWT_SECRET_FILE").ok_or_else(|| {
                ConfigError::new("JWT_SECRET", "HS256 needs JWT_SECRET or JWT_SECRET_FILE")
            })?;
            let secret = std::fs::read_to_string(&path).map_err(|e| {
                ConfigError::new("JWT_SECRET_FILE", format!("cannot read {path}: {e}"))
            })?;
            ("JWT_SECRET_FILE", secret.trim().to_owned())
        }
    };
    if secret.len() < MIN_HS256_SECRET_LEN {
        return Err(ConfigError::new(
            name,
            format!("an HS256 secret needs at least {MIN_HS256_SECRET_LEN} bytes"),
        ));
    }
    Ok(secret.into_bytes())
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
}

/// Checks credentials from the `Authorization` header.
#[derive(Clone)]
pub struct Authenticator {
    keys: ApiKeys,
    jwt: Option<JwtSettings>,
}

impl Authenticator {
    pub fn new(keys: ApiKeys, jwt: Option<JwtSettings>) -> Self {
        Self { keys, jwt }
    }

    /// The identity provider's keys, when JWTs are verified with a JWKS.
    pub fn jwks(&self) -> Option<&Arc<jwks::Jwks>> {
        self.jwt.as_ref().and_then(JwtSettings::jwks)
    }

    /// The caller named by the header. Waits only when a JWT names a key the JWKS cache does
    /// not hold yet (one rate-limited refresh).
    pub async fn authenticate(&self, header: Option<&[u8]>) -> Result<Principal, AuthError> {
        let header = header.ok_or(AuthError::Missing)?;
        let header = std::str::from_utf8(header).map_err(|_| AuthError::Malformed)?;
        let credential = match header.split_once(' ') {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => rest.trim(),
            Some(_) => return Err(AuthError::Malformed),
            None => header.trim(),
        };
        if credential.is_empty() {
            return Err(AuthError::Malformed);
        }
        if looks_like_jwt(credential)
            && let Some(jwt) = &self.jwt
        {
            return verify_jwt(jwt, credential).await;
        }
        self.keys
            .principal_of(credential)
            .ok_or(AuthError::UnknownKey)
    }
}

/// Three base64url segments separated by dots; API keys never contain dots in that shape.
fn looks_like_jwt(credential: &str) -> bool {
    credential.split('.').count() == 3
}

async fn verify_jwt(jwt: &JwtSettings, token: &str) -> Result<Principal, AuthError> {
    use jsonwebtoken::errors::ErrorKind;
    let key = match &jwt.key {
        VerificationKey::Configured(key) => Cow::Borrowed(key),
        VerificationKey::Jwks(jwks) => {
            let header = jsonwebtoken::decode_header(token)
                .map_err(|_| AuthError::InvalidToken("malformed_token"))?;
            // Checked before the key is looked up, so that a token for another algorithm
            // never makes the API fetch the JWKS again.
            if header.alg != jwt.algorithm {
                return Err(AuthError::InvalidToken("wrong_algorithm"));
            }
            Cow::Owned(jwks.key(header.kid.as_deref()).await?)
        }
    };
    match jsonwebtoken::decode::<Claims>(token, &key, &jwt.validation()) {
        Ok(data) if !data.claims.sub.is_empty() => Ok(Principal(data.claims.sub)),
        Ok(_) => Err(AuthError::InvalidToken("empty_subject")),
        Err(error) => Err(AuthError::InvalidToken(match error.kind() {
            ErrorKind::ExpiredSignature => "expired",
            ErrorKind::InvalidSignature => "bad_signature",
            ErrorKind::InvalidAudience => "wrong_audience",
            ErrorKind::InvalidIssuer => "wrong_issuer",
            ErrorKind::ImmatureSignature => "not_yet_valid",
            ErrorKind::InvalidAlgorithm => "wrong_algorithm",
            ErrorKind::MissingRequiredClaim(_) => "missing_claim",
            _ => "malformed_token",
        })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header, encode};
    use serde_json::json;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    fn authenticator(extra: &[(&str, &str)]) -> Authenticator {
        let mut env: std::collections::HashMap<String, String> = [
            (
                "API_KEYS",
                "alice=alice-key-0123456789, bob=bob-key-0123456789ab",
            ),
            ("JWT_ALGORITHM", "HS256"),
            ("JWT_SECRET", SECRET),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        Authenticator::new(
            ApiKeys::from_source(&env).unwrap(),
            JwtSettings::from_source(&env).unwrap(),
        )
    }

    fn token(claims: serde_json::Value) -> String {
        encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap()
    }

    fn in_an_hour() -> i64 {
        chrono::Utc::now().timestamp() + 3600
    }

    #[tokio::test]
    async fn api_keys_with_or_without_bearer() {
        let auth = authenticator(&[]);
        let alice = Ok(Principal("alice".into()));
        assert_eq!(
            auth.authenticate(Some(b"alice-key-0123456789")).await,
            alice
        );
        assert_eq!(
            auth.authenticate(Some(b"Bearer alice-key-0123456789"))
                .await,
            alice
        );
        assert_eq!(
            auth.authenticate(Some(b"bob-key-0123456789ab")).await,
            Ok(Principal("bob".into()))
        );
        assert_eq!(
            auth.authenticate(Some(b"alice-key-012345678")).await,
            Err(AuthError::UnknownKey)
        );
        assert_eq!(auth.authenticate(None).await, Err(AuthError::Missing));
        assert_eq!(
            auth.authenticate(Some(b"Basic abc")).await,
            Err(AuthError::Malformed)
        );
        assert_eq!(
            auth.authenticate(Some(b"Bearer ")).await,
            Err(AuthError::Malformed)
        );
    }

    #[tokio::test]
    async fn jwt_subject_is_the_principal() {
        let auth = authenticator(&[]);
        let t = token(json!({"sub": "carol", "exp": in_an_hour()}));
        assert_eq!(
            auth.authenticate(Some(format!("Bearer {t}").as_bytes()))
                .await,
            Ok(Principal("carol".into()))
        );
    }

    #[tokio::test]
    async fn bad_tokens_are_refused_with_their_reason() {
        let auth = authenticator(&[("JWT_ISSUER", "paysys-idp"), ("JWT_AUDIENCE", "paysys")]);
        let good = json!({"sub": "c", "exp": in_an_hour(), "iss": "paysys-idp", "aud": "paysys"});
        let check = async |claims: serde_json::Value, reason: &'static str| {
            let t = token(claims);
            assert_eq!(
                auth.authenticate(Some(t.as_bytes())).await,
                Err(AuthError::InvalidToken(reason))
            );
        };
        assert!(
            auth.authenticate(Some(token(good.clone()).as_bytes()))
                .await
                .is_ok()
        );
        let mut expired = good.clone();
        expired["exp"] = json!(chrono::Utc::now().timestamp() - 3600);
        check(expired, "expired").await;
        let mut no_exp = good.clone();
        no_exp.as_object_mut().unwrap().remove("exp");
        check(no_exp, "missing_claim").await;
        let mut wrong_aud = good.clone();
        wrong_aud["aud"] = json!("someone-else");
        check(wrong_aud, "wrong_audience").await;
        let mut wrong_iss = good.clone();
        wrong_iss["iss"] = json!("evil");
        check(wrong_iss, "wrong_issuer").await;

        let forged = encode(
            &Header::new(Algorithm::HS256),
            &good,
            &EncodingKey::from_secret(b"another-secret-another-secret-xx"),
        )
        .unwrap();
        assert_eq!(
            auth.authenticate(Some(forged.as_bytes())).await,
            Err(AuthError::InvalidToken("bad_signature"))
        );
    }

    #[tokio::test]
    async fn alg_none_and_other_algorithms_are_refused() {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let auth = authenticator(&[]);
        let claims = b64.encode(json!({"sub": "c", "exp": in_an_hour()}).to_string());
        for header in [
            json!({"alg": "none", "typ": "JWT"}),
            json!({"alg": "HS512", "typ": "JWT"}),
        ] {
            let header = b64.encode(header.to_string());
            let unsigned = format!("{header}.{claims}.");
            assert!(matches!(
                auth.authenticate(Some(unsigned.as_bytes())).await,
                Err(AuthError::InvalidToken(_))
            ));
        }
        let hs512 = encode(
            &Header::new(Algorithm::HS512),
            &json!({"sub": "c", "exp": in_an_hour()}),
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap();
        assert_eq!(
            auth.authenticate(Some(hs512.as_bytes())).await,
            Err(AuthError::InvalidToken("wrong_algorithm"))
        );
    }

    #[test]
    fn a_jwks_needs_a_pinned_public_key_algorithm_and_no_other_key() {
        const URL: (&str, &str) = ("JWT_JWKS_URL", "https://idp.example.com/jwks");
        let error = |pairs: &[(&str, &str)]| {
            let env: std::collections::HashMap<String, String> = pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            JwtSettings::from_source(&env).err().unwrap()
        };
        let unpinned = error(&[URL]);
        assert_eq!(unpinned.name, "JWT_ALGORITHM");
        assert!(unpinned.message.contains("pinned"), "{unpinned}");
        let hs256 = error(&[URL, ("JWT_ALGORITHM", "HS256"), ("JWT_SECRET", SECRET)]);
        assert_eq!(hs256.name, "JWT_JWKS_URL");
        assert_eq!(
            error(&[
                URL,
                ("JWT_ALGORITHM", "RS256"),
                ("JWT_PUBLIC_KEY_FILE", "/keys/idp.pem")
            ])
            .name,
            "JWT_PUBLIC_KEY_FILE"
        );
        let settings = JwtSettings::from_source(&[URL, ("JWT_ALGORITHM", "ES256")])
            .unwrap()
            .unwrap();
        assert!(settings.jwks().is_some());
        assert_eq!(settings.jwks().unwrap().health(), jwks::JwksHealth::Down);
    }

    #[test]
    fn configuration_errors_never_echo_keys() {
        let error = ApiKeys::from_source(&[("API_KEYS", "alice=short-key")]).unwrap_err();
        assert_eq!(error.name, "API_KEYS");
        assert!(!error.to_string().contains("short-key"), "{error}");
        let error =
            ApiKeys::from_source(&[("API_KEYS", "no-equals-sign-key-material")]).unwrap_err();
        assert!(!error.to_string().contains("no-equals"), "{error}");
        let error =
            JwtSettings::from_source(&[("JWT_ALGORITHM", "HS256"), ("JWT_SECRET", "short")])
                .err()
                .unwrap();
        assert_eq!(error.name, "JWT_SECRET");
    }
}
