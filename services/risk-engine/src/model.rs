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

use std::fmt;
use std::path::{Path, PathBuf};

use bosk::LgbModel;
use paysys_core::features::{FEATURE_NAMES, FeatureVector};
pub use paysys_core::model_card::{CARD_FILE, CARD_VERSION, Calibration, DriftReference};
use paysys_core::model_card::{Card, Refusal};

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
    /// Loads and checks the model directory `dir` (the checks are the card's, shared with the
    /// operator: `paysys_core::model_card`).
    pub fn load(dir: &Path) -> Result<Self, ModelError> {
        let card_path = dir.join(CARD_FILE);
        let card_text = std::fs::read_to_string(&card_path).map_err(|e| ModelError::Card {
            path: card_path.clone(),
            message: format!("cannot read: {e}"),
        })?;
        let card = Card::parse(&card_text).map_err(|refusal| ModelError::Card {
            path: card_path.clone(),
            message: refusal.to_string(),
        })?;
        let model_path = dir.join(&card.model_file);
        let bytes = std::fs::read(&model_path).map_err(|e| ModelError::ModelFile {
            path: model_path.clone(),
            version: card.model_version.clone(),
            message: format!("cannot read: {e}"),
        })?;
        let booster = card.check_model(&bytes).map_err(|refusal| match refusal {
            Refusal::ModelFile { version, message } => ModelError::ModelFile {
                path: model_path.clone(),
                version,
                message,
            },
            Refusal::Card(message) => ModelError::Card {
                path: card_path.clone(),
                message,
            },
        })?;
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
