//! The runtime every paysys binary shares, written once: configuration from environment
//! variables, logging, the shutdown signal, the `main` of a service, the container
//! healthcheck mode and the wait between retries.
//!
//! It holds no broker client (that is `paysys-amqp`), so the operator can use it without
//! compiling lapin.

pub mod backoff;
pub mod config;
pub mod healthcheck;
pub mod service;
pub mod shutdown;
pub mod telemetry;
