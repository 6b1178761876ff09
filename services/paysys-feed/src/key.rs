//! The Fernet key: where it comes from and how it is checked.
//!
//! Tokens are in the format of Python's `cryptography.fernet` (AES-128-CBC + HMAC-SHA256,
//! url-safe base64), so a key made by `Fernet.generate_key()` works here and the other way
//! round. The key never appears in logs or error messages.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use fernet::Fernet;

/// Environment variable holding the key itself (url-safe base64 of 32 bytes).
pub const KEY_ENV: &str = "PAYSYS_FEED_KEY";

/// Where the key is read from, as given on the command line.
#[derive(Debug, Clone, clap::Args)]
pub struct KeySource {
    /// File holding the Fernet key (url-safe base64 of 32 bytes, as made by `paysys-feed
    /// keygen` or Python's `Fernet.generate_key()`). Takes precedence over PAYSYS_FEED_KEY.
    #[arg(long, env = "PAYSYS_FEED_KEY_FILE")]
    pub key_file: Option<PathBuf>,
}

impl KeySource {
    /// The key, when one was given (file first, then the environment).
    pub fn load(&self) -> anyhow::Result<Option<Fernet>> {
        if let Some(path) = &self.key_file {
            return read_key_file(path).map(Some);
        }
        match std::env::var(KEY_ENV) {
            Ok(text) => parse(&text)
                .with_context(|| format!("the key in {KEY_ENV}"))
                .map(Some),
            Err(std::env::VarError::NotPresent) => Ok(None),
            Err(std::env::VarError::NotUnicode(_)) => bail!("{KEY_ENV} is not valid UTF-8"),
        }
    }

    /// The key, or an error saying how to give one.
    pub fn require(&self) -> anyhow::Result<Fernet> {
        self.load()?.with_context(|| {
            format!("no Fernet key: pass --key-file or set {KEY_ENV} (make one with `paysys-feed keygen`)")
        })
    }
}

fn read_key_file(path: &Path) -> anyhow::Result<Fernet> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the key file {}", path.display()))?;
    parse(&text).with_context(|| format!("the key file {}", path.display()))
}

/// Parses a key, ignoring surrounding whitespace (files usually end in a newline).
pub fn parse(text: &str) -> anyhow::Result<Fernet> {
    match Fernet::new(text.trim()) {
        Some(key) => Ok(key),
        None => bail!("not a Fernet key: expected url-safe base64 of 32 bytes (44 characters)"),
    }
}

/// A new random key, in the text form both Rust and Python read.
pub fn generate() -> String {
    Fernet::generate_key()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_key_parses_and_round_trips() {
        let key = parse(&format!("{}\n", generate())).unwrap();
        let token = key.encrypt(b"alice");
        assert_eq!(key.decrypt(&token).unwrap(), b"alice");
    }

    #[test]
    fn malformed_keys_are_refused_without_echoing_them() {
        for bad in ["", "secret-password", "c2hvcnQ=", &"A".repeat(40)] {
            let error = parse(bad).err().expect(bad).to_string();
            assert!(error.contains("not a Fernet key"), "{error}");
            assert!(bad.is_empty() || !error.contains(bad), "{error}");
        }
    }
}
