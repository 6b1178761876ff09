//! Domain code shared by the paysys services.
//!
//! Everything both the payments API and the risk engine must agree on lives here, so the
//! contract between them is a type, not a convention: money and currencies, the payment
//! status machine, the messages exchanged over RabbitMQ and the broker topology that carries
//! them. Small runtime helpers every binary needs (configuration parsing, logging, shutdown
//! signals, broker connections) live here too, so each is written once.

pub mod amqp;
pub mod config;
pub mod currency;
pub mod healthcheck;
pub mod messages;
pub mod money;
pub mod risk_rules;
pub mod service;
pub mod shutdown;
pub mod status;
pub mod telemetry;
pub mod topology;

pub use currency::Currency;
pub use messages::{DecisionMessage, Outcome, PaymentData, PaymentMessage, Reason, Velocity};
pub use money::{AmountError, Money};
pub use status::PaymentStatus;
