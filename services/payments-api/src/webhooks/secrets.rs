//! Signing secrets: generated here, shown to the merchant once, stored encrypted with
//! AES-256-GCM under `WEBHOOK_SECRETS_KEY` and bound to their endpoint's id (the associated
//! data), so that neither a dump of the database alone nor a ciphertext copied to another
//! endpoint's row can sign anything.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use uuid::Uuid;

const NONCE_BYTES: usize = 12;
/// What every secret starts with, so that one pasted in the wrong place is recognisable.
pub const SECRET_PREFIX: &str = "whsec_";

/// The key that encrypts signing secrets.
#[derive(Clone)]
pub struct SecretBox {
    cipher: Aes256Gcm,
}

impl std::fmt::Debug for SecretBox {
    /// Never the key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretBox(..)")
    }
}

impl SecretBox {
    /// The key from its base64 text (standard alphabet, 32 bytes).
    pub fn from_base64(text: &str) -> Result<Self, String> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .map_err(|_| "must be base64".to_owned())?;
        let cipher = Aes256Gcm::new_from_slice(&bytes)
            .map_err(|_| format!("must be 32 bytes once decoded, not {}", bytes.len()))?;
        Ok(Self { cipher })
    }

    /// A new secret: 32 random bytes, base64url, with [`SECRET_PREFIX`]. The HMAC key is the
    /// whole string's UTF-8 bytes (as the merchant holds it).
    pub fn generate() -> String {
        let bytes: [u8; 32] = rand::random();
        format!(
            "{SECRET_PREFIX}{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
        )
    }

    /// The stored form of `secret` for `endpoint`: nonce, then ciphertext and tag.
    pub fn seal(&self, endpoint: Uuid, secret: &str) -> Vec<u8> {
        let nonce: [u8; NONCE_BYTES] = rand::random();
        let sealed = self
            .cipher
            .encrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: secret.as_bytes(),
                    aad: endpoint.as_bytes(),
                },
            )
            .expect("AES-GCM encrypts any message of this size");
        [nonce.as_slice(), &sealed].concat()
    }

    /// The secret of `endpoint` from its stored form; `None` if it was sealed under another
    /// key or for another endpoint, or altered.
    pub fn open(&self, endpoint: Uuid, stored: &[u8]) -> Option<String> {
        if stored.len() < NONCE_BYTES {
            return None;
        }
        let (nonce, sealed) = stored.split_at(NONCE_BYTES);
        let nonce: [u8; NONCE_BYTES] = nonce.try_into().ok()?;
        let plain = self
            .cipher
            .decrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: sealed,
                    aad: endpoint.as_bytes(),
                },
            )
            .ok()?;
        String::from_utf8(plain).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> SecretBox {
        SecretBox::from_base64(&base64::engine::general_purpose::STANDARD.encode([byte; 32]))
            .unwrap()
    }

    #[test]
    fn sealed_secrets_open_only_for_their_endpoint_and_key() {
        let endpoint = Uuid::now_v7();
        let secret = SecretBox::generate();
        assert!(secret.starts_with(SECRET_PREFIX) && secret.len() > 40);
        let stored = key(1).seal(endpoint, &secret);
        assert!(
            !stored
                .windows(8)
                .any(|w| secret.as_bytes().windows(8).any(|s| s == w))
        );
        assert_eq!(
            key(1).open(endpoint, &stored).as_deref(),
            Some(secret.as_str())
        );
        assert_eq!(key(2).open(endpoint, &stored), None);
        assert_eq!(key(1).open(Uuid::now_v7(), &stored), None);
        let mut altered = stored.clone();
        *altered.last_mut().unwrap() ^= 1;
        assert_eq!(key(1).open(endpoint, &altered), None);
        assert_ne!(SecretBox::generate(), secret);
    }

    #[test]
    fn keys_must_be_32_bytes_of_base64() {
        assert!(SecretBox::from_base64("not base64!").is_err());
        let short = base64::engine::general_purpose::STANDARD.encode([0u8; 16]);
        assert!(SecretBox::from_base64(&short).unwrap_err().contains("16"));
    }
}
