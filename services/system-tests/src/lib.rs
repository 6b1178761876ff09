//! Whole-system harness: runs the built `payments-api` and `risk-engine` binaries as separate
//! processes against the real PostgreSQL and RabbitMQ (each behind a fault-injecting proxy),
//! drives a steady stream of payments through them, injects faults, and checks that nothing
//! was lost or decided twice.
//!
//! The binaries come from the same target directory as the test executable, so build the
//! workspace first (`scripts/test.sh` does: `cargo build --workspace --all-targets`).

pub mod driver;
pub mod invariants;
pub mod process;
pub mod report;
pub mod scenarios;
pub mod system;

pub use driver::{Driver, DriverStats};
pub use invariants::Verdict;
pub use report::Row;
pub use system::System;

/// Tests that start whole systems run one at a time: each starts several processes and the
/// machine has two cores.
pub static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
