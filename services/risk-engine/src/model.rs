//! The risk model: a LightGBM model and its model card, loaded once at start-up and checked
//! against this engine's features, then scoring one payment's [`FeatureVector`] in-process.
//!
//! A model is a directory written by the trainer: `model.txt` (LightGBM's own text format) and
//! `model-card.json` (docs/risk-engine.md, "Model mode", lists the fields read here). Inference
//! is the pure-Rust `bosk` crate (no native library, no download); its agreement with
//! LightGBM's own `predict` is a test (tests/engine/model.rs). Anything that does not match
//! (a missing card, another feature version or name list, a model file whose hash is not the
//! card's, a file that does not parse) is refused at start-up: a model that would score the
//! wrong inputs must never decide.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use bosk::LgbModel;
use paysys_core::features::{FEATURE_COUNT, FEATURE_NAMES, FEATURES_VERSION, FeatureVector};
use serde::Deserialize;
use sha2::{Digest, Sha256};

/// The card file's name inside a model directory (the contract's, not configurable).
pub const CARD_FILE: &str = "model-card.json";
/// The only `card_version` this build reads.
pub const CARD_VERSION: u32 = 1;

/// A model that passed every start-up check.
pub struct Model {
    /// The card's `model_version` (a content hash made by the trainer).
    pub version: String,
    /// Calibrated scores at or above it decline.
    pub threshold: f64,
    calibration: Calibration,
    booster: LgbModel,
    /// Training distribution per feature, for drift; in [`FEATURE_NAMES`] order, `None` for a
    /// feature the card gives no reference for.
    pub drift_reference: Vec<Option<DriftReference>>,
}

impl fmt::Debug for Model {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Model")
            .field("version", &self.version)
            .field("threshold", &self.threshold)
            .field("trees", &self.booster.num_trees())
            .finish_non_exhaustive()
    }
}

impl PartialEq for Model {
    /// The version is a hash of the model file, its calibration and its threshold.
    fn eq(&self, other: &Self) -> bool {
        self.version == other.version
    }
}

/// One payment's score by one model.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Score {
    /// LightGBM's probability (`predict` of the binary objective), before calibration.
    pub raw: f64,
    /// The raw probability through the card's calibration table: what the threshold applies to.
    pub calibrated: f64,
}

impl Model {
    /// Loads and checks the model directory `dir`.
    pub fn load(dir: &Path) -> Result<Self, ModelError> {
        let card_path = dir.join(CARD_FILE);
        let card_text = std::fs::read_to_string(&card_path).map_err(|e| ModelError::Card {
            path: card_path.clone(),
            message: format!("cannot read: {e}"),
        })?;
        let card: Card = serde_json::from_str(&card_text).map_err(|e| ModelError::Card {
            path: card_path.clone(),
            message: e.to_string(),
        })?;
        card.check(&card_path)?;
        let model_path = dir.join(&card.model_file);
        let bytes = std::fs::read(&model_path).map_err(|e| ModelError::ModelFile {
            path: model_path.clone(),
            version: card.model_version.clone(),
            message: format!("cannot read: {e}"),
        })?;
        let actual = hex::encode(Sha256::digest(&bytes));
        if !actual.eq_ignore_ascii_case(card.model_sha256.trim()) {
            return Err(ModelError::ModelFile {
                path: model_path,
                version: card.model_version,
                message: format!(
                    "sha256 is {actual}, the card says {}: the file is not the model the card describes",
                    card.model_sha256.trim()
                ),
            });
        }
        let booster = std::str::from_utf8(&bytes)
            .map_err(|e| e.to_string())
            .and_then(|text| LgbModel::parse(text).map_err(|e| e.to_string()))
            .map_err(|message| ModelError::ModelFile {
                path: model_path.clone(),
                version: card.model_version.clone(),
                message: format!("not a LightGBM text model this engine can evaluate: {message}"),
            })?;
        if booster.num_features() != FEATURE_COUNT {
            return Err(ModelError::ModelFile {
                path: model_path,
                version: card.model_version,
                message: format!(
                    "the model reads {} features, {FEATURES_VERSION} has {FEATURE_COUNT}",
                    booster.num_features()
                ),
            });
        }
        let drift_reference = FEATURE_NAMES
            .iter()
            .map(|name| card.drift_reference.get(*name).cloned())
            .collect();
        Ok(Self {
            version: card.model_version,
            threshold: card.threshold,
            calibration: card.calibration,
            booster,
            drift_reference,
        })
    }

    /// Scores one payment. Infallible: the feature count was checked at load.
    pub fn score(&self, features: &FeatureVector) -> Score {
        let raw = self.booster.predict_unchecked(&features.0);
        Score {
            raw,
            calibrated: self.calibration.apply(raw),
        }
    }

    /// Whether `score` declines: at or above the threshold.
    pub fn declines(&self, score: Score) -> bool {
        score.calibrated >= self.threshold
    }
}

/// Why a model directory was refused. Every message names the file and, once the card is
/// read, the model's version.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("{}: {message}", path.display())]
    Card { path: PathBuf, message: String },
    #[error("{}: model {version}: {message}", path.display())]
    ModelFile {
        path: PathBuf,
        version: String,
        message: String,
    },
}

/// The fields of `model-card.json` the engine reads (the trainer writes more: training
/// window, metrics, seed; they are for people and are ignored here).
#[derive(Debug, Deserialize)]
struct Card {
    card_version: u32,
    model_version: String,
    model_file: String,
    model_sha256: String,
    features_version: String,
    feature_names: Vec<String>,
    calibration: Calibration,
    threshold: f64,
    #[serde(default)]
    drift_reference: BTreeMap<String, DriftReference>,
}

impl Card {
    fn check(&self, path: &Path) -> Result<(), ModelError> {
        let refuse = |message: String| {
            Err(ModelError::Card {
                path: path.to_owned(),
                message,
            })
        };
        let version = &self.model_version;
        if self.card_version != CARD_VERSION {
            return refuse(format!(
                "model {version}: card_version {} is not {CARD_VERSION}, the only one this engine reads",
                self.card_version
            ));
        }
        if self.features_version != FEATURES_VERSION {
            return refuse(format!(
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
            return refuse(format!(
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
            return refuse(format!(
                "model {version}: model_file {:?} must be a file name in the model directory",
                self.model_file
            ));
        }
        if !(0.0..=1.0).contains(&self.threshold) {
            return refuse(format!(
                "model {version}: threshold {} is not between 0 and 1",
                self.threshold
            ));
        }
        if let Err(message) = self.calibration.check() {
            return refuse(format!("model {version}: calibration: {message}"));
        }
        for (name, reference) in &self.drift_reference {
            if !FEATURE_NAMES.contains(&name.as_str()) {
                return refuse(format!(
                    "model {version}: drift_reference names {name:?}, not a feature of {FEATURES_VERSION}"
                ));
            }
            if let Err(message) = reference.check() {
                return refuse(format!(
                    "model {version}: drift_reference.{name}: {message}"
                ));
            }
        }
        Ok(())
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
        // The drift window remembers bucket numbers as u16.
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

    fn table(x: &[f64], y: &[f64]) -> Calibration {
        Calibration {
            method: "isotonic".into(),
            x: x.to_vec(),
            y: y.to_vec(),
        }
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
