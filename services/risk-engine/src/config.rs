//! Configuration from the environment. Every problem is reported at start-up naming the
//! variable (and, for the rules file, the key inside it).

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use paysys_core::topology::{DEFAULT_PREFIX, Topology};
use paysys_runtime::config::{self, ConfigError, Source};

use crate::decide::{Decider, ModelMode};
use crate::drift;
use crate::model::Model;
use crate::random::RandomMode;
use crate::rules::{self, CompiledRules};

/// Unacknowledged deliveries the broker may hand the engine at once. Also the number of
/// decisions in flight (published, awaiting the broker's confirm).
pub const DEFAULT_PREFETCH: u16 = 200;

#[derive(Clone)]
pub struct Config {
    pub port: u16,
    pub amqp_url: String,
    pub topology: Topology,
    pub prefetch: u16,
    pub decider: Decider,
    /// Live feature vectors the drift metrics compare with each model's training data.
    pub drift_window: usize,
}

impl fmt::Debug for Config {
    /// Never prints the AMQP password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("port", &self.port)
            .field(
                "amqp_url",
                &paysys_runtime::config::redact_url(&self.amqp_url),
            )
            .field("payments_queue", &self.topology.payments_queue)
            .field("prefetch", &self.prefetch)
            .field("mode", &self.decider.mode_name())
            .field("rules_version", &self.decider.rules_version())
            .field("model", &self.decider.champion().map(|m| &m.version))
            .field("shadow", &self.decider.shadow().map(|m| &m.version))
            .field("drift_window", &self.drift_window)
            .finish()
    }
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_source(&config::Env)
    }

    pub fn from_source(source: &dyn Source) -> Result<Self, ConfigError> {
        let prefix =
            config::optional(source, "AMQP_PREFIX").unwrap_or_else(|| DEFAULT_PREFIX.into());
        let prefetch = config::parse_or(source, "RISK_PREFETCH", DEFAULT_PREFETCH)?;
        if prefetch == 0 {
            // 0 means "unlimited" to RabbitMQ: a backlog would flood the engine's memory.
            return Err(ConfigError::new(
                "RISK_PREFETCH",
                "must be between 1 and 65535",
            ));
        }
        let drift_window = config::parse_or(source, "DRIFT_WINDOW", drift::DEFAULT_WINDOW)?;
        if drift_window == 0 {
            return Err(ConfigError::new("DRIFT_WINDOW", "must be at least 1"));
        }
        Ok(Self {
            port: config::parse_or(source, "PORT", 8080)?,
            amqp_url: config::required(source, "AMQP_URL")?,
            topology: Topology::new(prefix.trim()),
            prefetch,
            decider: decider(source)?,
            drift_window,
        })
    }
}

fn decider(source: &dyn Source) -> Result<Decider, ConfigError> {
    // Both modes' settings are checked whichever is chosen: a bad value is a mistake waiting
    // for the day someone switches modes.
    let probability = config::parse_or(source, "RISK_APPROVAL_PROBABILITY", 0.7_f64)?;
    let seed = config::parse_or(source, "RISK_SEED", 0_u64)?;
    let random = RandomMode::new(probability, seed)
        .map_err(|e| ConfigError::new("RISK_APPROVAL_PROBABILITY", e))?;
    let rules = match config::optional(source, "RISK_RULES_FILE") {
        None => CompiledRules::default(),
        Some(path) => rules::load_file(Path::new(path.trim()))
            .map_err(|e| ConfigError::new("RISK_RULES_FILE", format!("{}: {e}", path.trim())))?,
    };
    // Checked in any mode too: a model that would be refused is refused before anyone
    // switches to model mode.
    let champion = model(source, "MODEL_DIR", "MODEL_VERSION")?;
    let mode = config::optional(source, "RISK_MODE").unwrap_or_else(|| "rules".into());
    let decider = match mode.trim().to_ascii_lowercase().as_str() {
        "rules" => Decider::Rules(Box::new(rules)),
        "random" => Decider::Random(random),
        "model" => {
            let Some(model) = champion else {
                return Err(ConfigError::new(
                    "MODEL_DIR",
                    "is required with RISK_MODE=model (a directory holding model.txt and model-card.json)",
                ));
            };
            Decider::Model(Box::new(ModelMode { rules, model }))
        }
        other => {
            return Err(ConfigError::new(
                "RISK_MODE",
                format!("must be 'rules', 'random' or 'model', got '{other}'"),
            ));
        }
    };
    // A challenger that cannot be loaded stops the engine like a bad champion: a broken model
    // is never rolled out, and a shadow silently missing would make the comparison it exists
    // for quietly empty.
    Ok(
        match model(source, "SHADOW_MODEL_DIR", "SHADOW_MODEL_VERSION")? {
            Some(shadow) => Decider::Shadowed(Box::new(decider), shadow),
            None => decider,
        },
    )
}

/// The model in the directory `variable` names, loaded and checked; `None` if it is unset.
///
/// `expected` names the variable that, when set, holds the version the directory must hold:
/// a deployer that cannot read the files itself (the operator with a model on a
/// PersistentVolumeClaim) states the version it rolls out, and an engine finding another one
/// refuses to start, so the rollout stops with the old pods still serving.
fn model(
    source: &dyn Source,
    variable: &str,
    expected: &str,
) -> Result<Option<Arc<Model>>, ConfigError> {
    let Some(dir) = config::optional(source, variable) else {
        return Ok(None);
    };
    let dir = dir.trim();
    let model =
        Model::load(Path::new(dir)).map_err(|e| ConfigError::new(variable, e.to_string()))?;
    if let Some(version) = config::optional(source, expected) {
        let version = version.trim();
        if model.version != version {
            return Err(ConfigError::new(
                expected,
                format!(
                    "is {version}, but {dir} ({variable}) holds model {}: the directory is not the model being rolled out",
                    model.version
                ),
            ));
        }
    }
    Ok(Some(Arc::new(model)))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    const URL: (&str, &str) = ("AMQP_URL", "amqp://guest:secret@rabbit:5672/%2f");

    #[test]
    fn defaults() {
        let config = Config::from_source(&env(&[URL])).unwrap();
        assert_eq!(config.port, 8080);
        assert_eq!(config.prefetch, 200);
        assert_eq!(config.topology.payments_queue, "paysys.payments.v2");
        assert_eq!(config.decider, Decider::Rules(Box::default()));
        let printed = format!("{config:?}");
        assert!(!printed.contains("secret"), "{printed}");
    }

    #[test]
    fn random_mode_settings() {
        let config = Config::from_source(&env(&[
            URL,
            ("RISK_MODE", "random"),
            ("RISK_APPROVAL_PROBABILITY", "0.25"),
            ("RISK_SEED", "7"),
            ("AMQP_PREFIX", "t1"),
            ("RISK_PREFETCH", "150"),
        ]))
        .unwrap();
        assert_eq!(config.decider.rules_version(), "random:p=0.25:seed=7");
        assert_eq!(config.topology.payments_queue, "t1.payments.v2");
        assert_eq!(config.prefetch, 150);
    }

    #[test]
    fn errors_name_the_variable() {
        let name = |pairs: &[(&str, &str)]| Config::from_source(&env(pairs)).unwrap_err().name;
        assert_eq!(name(&[]), "AMQP_URL");
        assert_eq!(name(&[URL, ("PORT", "http")]), "PORT");
        assert_eq!(name(&[URL, ("RISK_MODE", "coin")]), "RISK_MODE");
        assert_eq!(name(&[URL, ("RISK_PREFETCH", "0")]), "RISK_PREFETCH");
        assert_eq!(name(&[URL, ("RISK_PREFETCH", "70000")]), "RISK_PREFETCH");
        assert_eq!(
            name(&[URL, ("RISK_APPROVAL_PROBABILITY", "1.5")]),
            "RISK_APPROVAL_PROBABILITY"
        );
        assert_eq!(name(&[URL, ("RISK_SEED", "-1")]), "RISK_SEED");
        assert_eq!(
            name(&[URL, ("RISK_RULES_FILE", "/nonexistent.yaml")]),
            "RISK_RULES_FILE"
        );
    }

    #[test]
    fn model_settings() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/model");
        let config = Config::from_source(&env(&[
            URL,
            ("RISK_MODE", "model"),
            ("MODEL_DIR", dir),
            ("DRIFT_WINDOW", "500"),
        ]))
        .unwrap();
        assert_eq!(config.decider.mode_name(), "model");
        assert_eq!(config.decider.rules_version(), "default");
        assert!(config.decider.champion().is_some());
        assert!(config.decider.shadow().is_none());
        assert_eq!(config.drift_window, 500);
        let shadowed = Config::from_source(&env(&[URL, ("SHADOW_MODEL_DIR", dir)])).unwrap();
        assert_eq!(shadowed.decider.mode_name(), "rules");
        assert!(shadowed.decider.champion().is_none());
        assert_eq!(
            shadowed.decider.shadow().map(|m| m.version.as_str()),
            config.decider.champion().map(|m| m.version.as_str())
        );
        assert_eq!(
            Config::from_source(&env(&[URL])).unwrap().drift_window,
            10_000
        );
        let name = |pairs: &[(&str, &str)]| Config::from_source(&env(pairs)).unwrap_err().name;
        assert_eq!(name(&[URL, ("RISK_MODE", "model")]), "MODEL_DIR");
        assert_eq!(
            name(&[URL, ("RISK_MODE", "model"), ("MODEL_DIR", "/nonexistent")]),
            "MODEL_DIR"
        );
        assert_eq!(
            name(&[URL, ("SHADOW_MODEL_DIR", "/nonexistent")]),
            "SHADOW_MODEL_DIR"
        );
        assert_eq!(name(&[URL, ("DRIFT_WINDOW", "0")]), "DRIFT_WINDOW");
        let version = config.decider.champion().unwrap().version.clone();
        let stated = |variable: &str, value: &str| {
            Config::from_source(&env(&[
                URL,
                ("MODEL_DIR", dir),
                ("SHADOW_MODEL_DIR", dir),
                (variable, value),
            ]))
        };
        assert!(stated("MODEL_VERSION", &version).is_ok());
        assert!(stated("SHADOW_MODEL_VERSION", &version).is_ok());
        let refused = stated("MODEL_VERSION", "m-0000").unwrap_err();
        assert_eq!(refused.name, "MODEL_VERSION");
        assert_eq!(
            refused.to_string(),
            format!(
                "invalid configuration: MODEL_VERSION: is m-0000, but {dir} (MODEL_DIR) holds model {version}: the directory is not the model being rolled out"
            )
        );
        assert_eq!(
            stated("SHADOW_MODEL_VERSION", "m-0000").unwrap_err().name,
            "SHADOW_MODEL_VERSION"
        );
        assert_eq!(
            name(&[URL, ("RISK_MODE", "rules"), ("MODEL_DIR", "/nonexistent")]),
            "MODEL_DIR",
            "a bad model is refused before anyone switches to model mode"
        );
    }

    #[test]
    fn rules_file_errors_name_the_file_and_the_key() {
        let dir = std::env::temp_dir().join(format!("risk-config-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("rules.yaml");
        std::fs::write(&path, "maxAmount:\n  USD: \"12.345\"\n").unwrap();
        let path_text = path.to_str().unwrap();
        let error = Config::from_source(&env(&[URL, ("RISK_RULES_FILE", path_text)])).unwrap_err();
        assert_eq!(
            error.to_string(),
            format!(
                r#"invalid configuration: RISK_RULES_FILE: {path_text}: maxAmount.USD: "12.345" has more decimals than USD allows (2)"#
            )
        );
        std::fs::write(&path, "version: r2\nblockedPayeeIds: []\n").unwrap();
        let config = Config::from_source(&env(&[URL, ("RISK_RULES_FILE", path_text)])).unwrap();
        assert_eq!(config.decider.rules_version(), "r2");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
