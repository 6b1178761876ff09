//! Domain code shared by the paysys services.
//!
//! Everything both the payments API and the risk engine must agree on lives here, so the
//! contract between them is a type, not a convention: money and currencies, the payment
//! status machine, the messages exchanged over RabbitMQ and the broker topology that carries
//! them, the risk rules the operator renders for the engine and validates with the engine's
//! own `compile`, and the risk model's card and checks, which the engine and the operator
//! share. It is pure domain code: the runtime (tokio, logging, the shared `main`) is
//! `paysys-runtime` and the broker client is `paysys-amqp`, so the operator, which needs only
//! the risk rules and the model card, compiles neither lapin nor a broker
//! (`tests/dependencies.rs` keeps it so).

pub mod currency;
pub mod dispute;
pub mod features;
pub mod messages;
pub mod model_card;
pub mod money;
pub mod risk_rules;
pub mod status;
pub mod topology;

pub use currency::Currency;
pub use dispute::DisputeReason;
pub use features::{FEATURE_NAMES, FEATURES_VERSION, FeatureLog, FeatureVector};
pub use messages::{
    DecisionMessage, History, ModelScore, Outcome, PaymentData, PaymentMessage, Reason, Velocity,
};
pub use money::{AmountError, Money};
pub use status::PaymentStatus;
