//! The Fernet key: where it comes from and how it is checked.
//!
//! Tokens are in the format of Python's `cryptography.fernet` (AES-128-CBC + HMAC-SHA256,
//! url-safe base64), so a key made by `Fernet.generate_key()` works here and the other way
//! round. The key never appears in logs or error messages.

use std::path::PathBuf;

use aes::Aes128;
use anyhow::{Context, bail};
use base64::Engine;
use base64::engine::general_purpose::{URL_SAFE, URL_SAFE_NO_PAD};
use cbc::cipher::block_padding::Pkcs7;
use cbc::cipher::{BlockEncryptMut, InnerIvInit, KeyInit};
use fernet::Fernet;
use hmac::{Hmac, Mac};
use sha2::Sha256;

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
        self.load_with(parse)
    }

    /// The key, or an error saying how to give one.
    pub fn require(&self) -> anyhow::Result<Fernet> {
        self.load()?.with_context(missing)
    }

    /// A [`TokenMaker`] for the key, or an error saying how to give one.
    pub fn require_token_maker(&self) -> anyhow::Result<TokenMaker> {
        self.load_with(TokenMaker::new)?.with_context(missing)
    }

    /// Reads the key's text (file first, then the environment) and makes `T` of it.
    fn load_with<T>(&self, make: fn(&str) -> anyhow::Result<T>) -> anyhow::Result<Option<T>> {
        if let Some(path) = &self.key_file {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the key file {}", path.display()))?;
            return make(&text)
                .with_context(|| format!("the key file {}", path.display()))
                .map(Some);
        }
        match std::env::var(KEY_ENV) {
            Ok(text) => make(&text)
                .with_context(|| format!("the key in {KEY_ENV}"))
                .map(Some),
            Err(std::env::VarError::NotPresent) => Ok(None),
            Err(std::env::VarError::NotUnicode(_)) => bail!("{KEY_ENV} is not valid UTF-8"),
        }
    }
}

fn missing() -> String {
    format!("no Fernet key: pass --key-file or set {KEY_ENV} (make one with `paysys-feed keygen`)")
}

/// Parses a key, ignoring surrounding whitespace (files usually end in a newline).
pub fn parse(text: &str) -> anyhow::Result<Fernet> {
    match Fernet::new(text.trim()) {
        Some(key) => Ok(key),
        None => bail!("not a Fernet key: expected url-safe base64 of 32 bytes (44 characters)"),
    }
}

/// The key's 32 bytes: the first half signs (HMAC-SHA256), the second encrypts (AES-128).
fn key_bytes(text: &str) -> anyhow::Result<[u8; 32]> {
    // As the fernet crate reads keys: padding optional.
    URL_SAFE_NO_PAD
        .decode(text.trim().trim_end_matches('='))
        .ok()
        .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
        .context("not a Fernet key: expected url-safe base64 of 32 bytes (44 characters)")
}

/// IVs drawn from the OS per refill: 256 tokens' worth.
const IV_POOL: usize = 16 * 256;
/// Version byte of every Fernet token.
const VERSION: u8 = 0x80;

/// Makes Fernet tokens for many values in a row, for the export.
///
/// The tokens are those of `Fernet::encrypt` (and of Python's `Fernet.encrypt`): version
/// 0x80, the time in seconds, a random IV, the value in AES-128-CBC with PKCS#7 padding,
/// HMAC-SHA256 of all that, in url-safe base64 with padding. What it saves are the per-token
/// costs of that function, which made a third of the export's time: the AES key schedule and
/// the HMAC key are prepared once, nothing is allocated per token, and the IVs come from the
/// OS random source 4 KiB at a time instead of one system call each. Every IV is still fresh
/// OS randomness, used once.
pub struct TokenMaker {
    cipher: Aes128,
    mac: Hmac<Sha256>,
    ivs: Box<[u8; IV_POOL]>,
    next_iv: usize,
    raw: Vec<u8>,
    text: Vec<u8>,
}

impl TokenMaker {
    pub fn new(key_text: &str) -> anyhow::Result<Self> {
        let key = key_bytes(key_text)?;
        let (signing, encryption) = key.split_at(16);
        Ok(Self {
            cipher: Aes128::new_from_slice(encryption).expect("16 bytes"),
            mac: <Hmac<Sha256> as Mac>::new_from_slice(signing).expect("any length"),
            ivs: Box::new([0; IV_POOL]),
            next_iv: IV_POOL,
            raw: Vec::with_capacity(128),
            text: Vec::with_capacity(192),
        })
    }

    /// The token of `value` made at `now` (seconds since the Unix epoch), as base64 text.
    /// Valid until the next call.
    pub fn encrypt_at(&mut self, value: &[u8], now: u64) -> anyhow::Result<&[u8]> {
        if self.next_iv == IV_POOL {
            getrandom::getrandom(&mut self.ivs[..])
                .map_err(|e| anyhow::anyhow!("no randomness for Fernet IVs: {e}"))?;
            self.next_iv = 0;
        }
        let iv: [u8; 16] = self.ivs[self.next_iv..self.next_iv + 16]
            .try_into()
            .expect("16 bytes");
        self.next_iv += 16;
        Ok(self.encrypt_with_iv(value, now, iv))
    }

    /// The token of `value` made at `now` with the given IV. Only for generated (simulated)
    /// data that must be byte-identical for a given seed (`paysys-sim`): a real export never
    /// chooses its IVs, it draws them from the OS ([`Self::encrypt_at`]).
    pub fn encrypt_with_iv(&mut self, value: &[u8], now: u64, iv: [u8; 16]) -> &[u8] {
        let iv = &iv[..];
        let raw = &mut self.raw;
        raw.clear();
        raw.push(VERSION);
        raw.extend_from_slice(&now.to_be_bytes());
        raw.extend_from_slice(iv);
        let start = raw.len();
        let padded = (value.len() / 16 + 1) * 16;
        raw.resize(start + padded, 0);
        cbc::Encryptor::<Aes128>::inner_iv_slice_init(self.cipher.clone(), iv)
            .expect("16-byte IV")
            .encrypt_padded_b2b_mut::<Pkcs7>(value, &mut raw[start..])
            .expect("room for the padding");
        let mut mac = self.mac.clone();
        mac.update(raw);
        raw.extend_from_slice(&mac.finalize().into_bytes());

        self.text.resize(raw.len().div_ceil(3) * 4, 0);
        let written = URL_SAFE
            .encode_slice(&*raw, &mut self.text)
            .expect("room for the base64");
        &self.text[..written]
    }

    /// The token of `value`, made now.
    pub fn encrypt(&mut self, value: &[u8]) -> anyhow::Result<&[u8]> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.encrypt_at(value, now)
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
    fn made_tokens_decrypt_with_the_fernet_crate_and_never_share_an_iv() {
        let text = generate();
        let key = parse(&text).unwrap();
        let mut maker = TokenMaker::new(&format!("{text}\n")).unwrap();
        let mut ivs = std::collections::HashSet::new();
        // More tokens than one pool of IVs, and values of every padding length.
        for i in 0..1000 {
            let value = "x".repeat(i % 40);
            let token =
                String::from_utf8(maker.encrypt(value.as_bytes()).unwrap().to_vec()).unwrap();
            assert_eq!(key.decrypt(&token).unwrap(), value.as_bytes(), "{token}");
            let raw = URL_SAFE.decode(&token).unwrap();
            assert_eq!(raw[0], VERSION);
            assert!(ivs.insert(raw[9..25].to_vec()), "IV used twice");
        }
        let other = parse(&generate()).unwrap();
        let token = String::from_utf8(maker.encrypt(b"alice").unwrap().to_vec()).unwrap();
        assert!(other.decrypt(&token).is_err());
    }

    #[test]
    fn the_token_maker_refuses_what_parse_refuses() {
        for bad in ["", "secret-password", "c2hvcnQ=", &"A".repeat(40)] {
            let error = TokenMaker::new(bad).err().expect(bad).to_string();
            assert!(error.contains("not a Fernet key"), "{error}");
        }
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
