//! Why a resource cannot be reconciled.

/// Why a resource cannot be reconciled; each variant's name is a condition reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, strum::IntoStaticStr)]
pub enum ValidationError {
    #[error("invalid spec: {0}")]
    InvalidSpec(String),
    /// `spec.riskEngine.rules` is a rule set the risk engine would refuse at start-up (its
    /// pods would crash-loop on it): the message is the engine's own, from the same `compile`.
    #[error("invalid risk rules: riskEngine.rules.{}: {}", .0.path, .0.message)]
    InvalidRiskRules(paysys_core::risk_rules::RulesError),
    #[error("Secret {0} not found")]
    SecretNotFound(String),
    #[error("Secret {secret} has no key {key}")]
    SecretKeyMissing { secret: String, key: String },
    #[error("Secret {secret} key {key} {problem}")]
    SecretKeyInvalid {
        secret: String,
        key: String,
        problem: &'static str,
    },
    /// A ConfigMap or Secret named as a risk model's source does not exist.
    #[error("the risk model's {source_name} not found")]
    ModelNotFound {
        /// The kind and name, e.g. `Secret risk-model`.
        source_name: String,
    },
    /// A risk model fails the engine's checks (`paysys_core::model_card`): never rolled out.
    #[error("the risk model in {source_name} cannot be served: {message}")]
    ModelInvalid {
        /// The ConfigMap or Secret and key the model was read from.
        source_name: String,
        message: String,
    },
    /// A risk engine pod started for the current model (on a claim, which only the engine can
    /// read) refused it; the pods of the previous model keep running.
    #[error("risk engine pod {pod} refused the model it was started for: {message}")]
    ModelRefused { pod: String, message: String },
}

impl ValidationError {
    /// CamelCase reason for conditions, Events and the failure metric.
    pub fn reason(&self) -> &'static str {
        self.into()
    }
}

pub(super) fn invalid(message: impl Into<String>) -> ValidationError {
    ValidationError::InvalidSpec(message.into())
}
