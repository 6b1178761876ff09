//! A risk model as the trainer writes it (`services/paysys-model`, docs/risk-model.md): a
//! model card (`model-card.json`) and the LightGBM text file it describes, and the checks
//! that decide whether this release can serve it.
//!
//! Two readers make the same checks: the risk engine at start-up (refusing with exit 2) and
//! the operator before it rolls a model out (refusing with `Degraded`), so a model one
//! accepts the other accepts too. Neither reads files here: the engine reads a directory, the
//! operator a ConfigMap or Secret, and each says where the bytes came from in its own
//! messages; a [`Refusal`] says only what is wrong.

use std::collections::BTreeMap;

use bosk::LgbModel;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::features::{FEATURE_COUNT, FEATURE_NAMES, FEATURES_VERSION};

/// The card file's name inside a model directory (the contract's, not configurable).
pub const CARD_FILE: &str = "model-card.json";
/// The only `card_version` this release reads.
pub const CARD_VERSION: u32 = 1;

/// Why a model cannot be served. Once the card is read, every message names the model's
/// version; a feature mismatch names both feature versions.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The card does not parse or contradicts this release (about `model-card.json`).
    #[error("{0}")]
    Card(String),
    /// The model file is not the one the card describes, or cannot be evaluated (about the
    /// card's `model_file`).
    #[error("model {version}: {message}")]
    ModelFile { version: String, message: String },
}

/// The fields of `model-card.json` the readers use (the trainer writes more: training
/// window, metrics, seed; they are for people and are ignored here).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Card {
    pub card_version: u32,
    /// The model's version: a content hash made by the trainer.
    pub model_version: String,
    /// The model file's name, beside the card (`model.txt`).
    pub model_file: String,
    pub model_sha256: String,
    pub features_version: String,
    pub feature_names: Vec<String>,
    pub calibration: Calibration,
    /// Calibrated scores at or above it decline.
    pub threshold: f64,
    /// Training distribution per feature, for drift.
    #[serde(default)]
    pub drift_reference: BTreeMap<String, DriftReference>,
}

impl Card {
    /// Parses a card and checks it against this release's features.
    pub fn parse(text: &str) -> Result<Self, Refusal> {
        let card: Self = serde_json::from_str(text).map_err(|e| Refusal::Card(e.to_string()))?;
        card.check().map_err(Refusal::Card)?;
        Ok(card)
    }

    fn check(&self) -> Result<(), String> {
        let version = &self.model_version;
        if self.card_version != CARD_VERSION {
            return Err(format!(
                "model {version}: card_version {} is not {CARD_VERSION}, the only one this engine reads",
                self.card_version
            ));
        }
        if self.features_version != FEATURES_VERSION {
            return Err(format!(
                "model {version} was trained on features {}, this engine computes {FEATURES_VERSION}",
                self.features_version
            ));
        }
        if self.feature_names != FEATURE_NAMES {
            let first = (0..FEATURE_COUNT.max(self.feature_names.len()))
                .find(|&i| {
                    self.feature_names.get(i).map(String::as_str) != FEATURE_NAMES.get(i).copied()
                })
                .unwrap_or(0);
            let name = |n: Option<&str>| n.map_or("nothing".to_owned(), |n| format!("{n:?}"));
            return Err(format!(
                "model {version}: feature_names differ from {FEATURES_VERSION}'s at position {first}: the card has {}, this engine {} ({} names in the card, {FEATURE_COUNT} in the engine)",
                name(self.feature_names.get(first).map(String::as_str)),
                name(FEATURE_NAMES.get(first).copied()),
                self.feature_names.len()
            ));
        }
        // A plain file name: a card must not point outside its own directory.
        if self.model_file.is_empty()
            || self.model_file.contains(['/', '\\'])
            || self.model_file == ".."
        {
            return Err(format!(
                "model {version}: model_file {:?} must be a file name in the model directory",
                self.model_file
            ));
        }
        if !(0.0..=1.0).contains(&self.threshold) {
            return Err(format!(
                "model {version}: threshold {} is not between 0 and 1",
                self.threshold
            ));
        }
        if let Err(message) = self.calibration.check() {
            return Err(format!("model {version}: calibration: {message}"));
        }
        for (name, reference) in &self.drift_reference {
            if !FEATURE_NAMES.contains(&name.as_str()) {
                return Err(format!(
                    "model {version}: drift_reference names {name:?}, not a feature of {FEATURES_VERSION}"
                ));
            }
            if let Err(message) = reference.check() {
                return Err(format!(
                    "model {version}: drift_reference.{name}: {message}"
                ));
            }
        }
        Ok(())
    }

    /// Checks the model file's bytes against the card (its sha256) and parses them; the
    /// model must read exactly this release's features.
    pub fn check_model(&self, bytes: &[u8]) -> Result<LgbModel, Refusal> {
        let refuse = |message: String| Refusal::ModelFile {
            version: self.model_version.clone(),
            message,
        };
        let actual = hex::encode(Sha256::digest(bytes));
        let expected = self.model_sha256.trim();
        if !actual.eq_ignore_ascii_case(expected) {
            return Err(refuse(format!(
                "sha256 is {actual}, the card says {expected}: the file is not the model the card describes"
            )));
        }
        let booster = std::str::from_utf8(bytes)
            .map_err(|e| e.to_string())
            .and_then(|text| LgbModel::parse(text).map_err(|e| e.to_string()))
            .map_err(|message| {
                refuse(format!(
                    "not a LightGBM text model this engine can evaluate: {message}"
                ))
            })?;
        if booster.num_features() != FEATURE_COUNT {
            return Err(refuse(format!(
                "the model reads {} features, {FEATURES_VERSION} has {FEATURE_COUNT}",
                booster.num_features()
            )));
        }
        Ok(booster)
    }
}

/// The card's calibration table: raw probability → calibrated score.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Calibration {
    pub method: String,
    pub x: Vec<f64>,
    pub y: Vec<f64>,
}

impl Calibration {
    fn check(&self) -> Result<(), String> {
        if self.x.is_empty() || self.x.len() != self.y.len() {
            return Err(format!(
                "x and y must be non-empty and of equal length (x has {}, y {})",
                self.x.len(),
                self.y.len()
            ));
        }
        if self.x.iter().chain(&self.y).any(|v| !v.is_finite()) {
            return Err("x and y must be finite numbers".into());
        }
        if self.x.windows(2).any(|w| w[0] > w[1]) {
            return Err("x must be increasing".into());
        }
        Ok(())
    }

    /// Piecewise-linear interpolation over (x, y), clipped at both ends: exactly
    /// `numpy.interp(raw, x, y)`, the trainer's own calibration, operation for operation (the
    /// segment is the last `x[j] <= raw`, and `slope * (raw - x[j]) + y[j]`), so the engine's
    /// score is the trainer's to the last bit.
    pub fn apply(&self, raw: f64) -> f64 {
        let (x, y) = (&self.x, &self.y);
        let last = x.len() - 1;
        if raw.is_nan() {
            return f64::NAN;
        }
        if raw < x[0] {
            return y[0];
        }
        if raw > x[last] {
            return y[last];
        }
        let j = x.partition_point(|&v| v <= raw) - 1;
        if j == last || x[j] == raw {
            return y[j];
        }
        let slope = (y[j + 1] - y[j]) / (x[j + 1] - x[j]);
        slope * (raw - x[j]) + y[j]
    }
}

/// One feature's training distribution: bucket edges and the share of training rows in each
/// bucket (`edges.len() + 1` buckets; a value is in bucket "number of edges <= value").
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct DriftReference {
    pub edges: Vec<f64>,
    pub shares: Vec<f64>,
}

impl DriftReference {
    fn check(&self) -> Result<(), String> {
        // The engine's drift window remembers bucket numbers as u16.
        if self.edges.len() >= usize::from(u16::MAX) {
            return Err(format!("{} edges; at most 65,534", self.edges.len()));
        }
        if self.shares.len() != self.edges.len() + 1 {
            return Err(format!(
                "{} edges need {} shares, got {}",
                self.edges.len(),
                self.edges.len() + 1,
                self.shares.len()
            ));
        }
        if self.edges.windows(2).any(|w| w[0] >= w[1]) || self.edges.iter().any(|e| !e.is_finite())
        {
            return Err("edges must be finite and strictly increasing".into());
        }
        if self.shares.iter().any(|s| !(0.0..=1.0).contains(s)) {
            return Err("shares must be between 0 and 1".into());
        }
        Ok(())
    }

    /// The bucket of `value`: `numpy.searchsorted(edges, value, side="right")`.
    pub fn bucket(&self, value: f64) -> usize {
        self.edges.partition_point(|&e| e <= value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CARD: &str = include_str!("../../risk-engine/tests/fixtures/model/model-card.json");
    const MODEL: &str = include_str!("../../risk-engine/tests/fixtures/model/model.txt");

    fn table(x: &[f64], y: &[f64]) -> Calibration {
        Calibration {
            method: "isotonic".into(),
            x: x.to_vec(),
            y: y.to_vec(),
        }
    }

    fn edited_card(change: impl FnOnce(&mut serde_json::Value)) -> String {
        let mut card: serde_json::Value = serde_json::from_str(CARD).unwrap();
        change(&mut card);
        card.to_string()
    }

    #[test]
    fn the_trainers_model_passes_every_check() {
        let card = Card::parse(CARD).unwrap();
        assert_eq!(card.model_file, "model.txt");
        assert_eq!(card.features_version, FEATURES_VERSION);
        let booster = card.check_model(MODEL.as_bytes()).unwrap();
        assert_eq!(booster.num_features(), FEATURE_COUNT);
    }

    #[test]
    fn each_refusal_says_what_is_wrong() {
        let card = Card::parse(CARD).unwrap();
        let version = card.model_version.clone();
        let wrong = edited_card(|c| c["features_version"] = "payment-features/0".into());
        assert_eq!(
            Card::parse(&wrong).unwrap_err().to_string(),
            format!(
                "model {version} was trained on features payment-features/0, this engine computes {FEATURES_VERSION}"
            )
        );
        let outside = edited_card(|c| c["model_file"] = "../model.txt".into());
        assert!(
            Card::parse(&outside)
                .unwrap_err()
                .to_string()
                .contains("must be a file name")
        );
        assert!(matches!(
            Card::parse("{not json").unwrap_err(),
            Refusal::Card(_)
        ));
        let tampered = MODEL.replacen("leaf_value=", "leaf_value=9", 1);
        let refusal = card.check_model(tampered.as_bytes()).unwrap_err();
        assert!(
            refusal
                .to_string()
                .starts_with(&format!("model {version}: sha256 is ")),
            "{refusal}"
        );
        let garbage = "tree\nversion=v4\nTree=0\nnum_leaves=three\n";
        let mut garbage_card = card.clone();
        garbage_card.model_sha256 = hex::encode(Sha256::digest(garbage.as_bytes()));
        assert!(
            garbage_card
                .check_model(garbage.as_bytes())
                .unwrap_err()
                .to_string()
                .contains("not a LightGBM text model this engine can evaluate")
        );
    }

    #[test]
    fn calibration_interpolates_and_clips_like_numpy_interp() {
        let c = table(&[0.1, 0.2, 0.4], &[0.0, 0.5, 0.9]);
        assert_eq!(c.apply(0.0), 0.0);
        assert_eq!(c.apply(0.1), 0.0);
        assert_eq!(c.apply(0.15), 0.5 / 0.1 * (0.15 - 0.1));
        assert_eq!(c.apply(0.2), 0.5);
        assert_eq!(c.apply(0.3), (0.9 - 0.5) / 0.2 * (0.3 - 0.2) + 0.5);
        assert_eq!(c.apply(0.4), 0.9);
        assert_eq!(c.apply(0.99), 0.9);
        // A repeated x (allowed: "increasing" is not "strictly"): the last of them rules.
        let steps = table(&[0.1, 0.2, 0.2, 0.3], &[0.0, 0.2, 0.6, 1.0]);
        assert_eq!(steps.apply(0.2), 0.6);
        assert_eq!(steps.apply(0.25), 0.8);
        assert!(table(&[0.2, 0.1], &[0.0, 1.0]).check().is_err());
        assert!(table(&[0.1], &[0.0, 1.0]).check().is_err());
        assert!(table(&[], &[]).check().is_err());
        assert!(table(&[0.1, f64::NAN], &[0.0, 1.0]).check().is_err());
    }

    #[test]
    fn drift_buckets_count_the_edges_at_or_below_the_value() {
        let r = DriftReference {
            edges: vec![1.0, 2.0],
            shares: vec![0.3, 0.4, 0.3],
        };
        assert_eq!(r.bucket(0.5), 0);
        assert_eq!(r.bucket(1.0), 1);
        assert_eq!(r.bucket(1.5), 1);
        assert_eq!(r.bucket(2.0), 2);
        assert_eq!(r.bucket(9.0), 2);
        assert!(r.check().is_ok());
        let short = DriftReference {
            edges: vec![1.0, 2.0],
            shares: vec![0.5, 0.5],
        };
        assert!(short.check().is_err());
        let unsorted = DriftReference {
            edges: vec![2.0, 1.0],
            shares: vec![0.3, 0.4, 0.3],
        };
        assert!(unsorted.check().is_err());
    }
}
