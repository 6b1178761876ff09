//! The runtime every paysys binary shares, written once: configuration from environment
//! variables, logging, the shutdown signal, the `main` of a service, the container
//! healthcheck mode, the wait between retries and the build-info metric.
//!
//! It holds no broker client (that is `paysys-amqp`), so the operator can use it without
//! compiling lapin.

pub mod backoff;
pub mod build_info;
pub mod config;
pub mod healthcheck;
pub mod service;
pub mod shutdown;
pub mod telemetry;
