//! Integration tests of the risk engine against the real RabbitMQ (see `scripts/test.sh`).
//! Each test runs the engine in-process on its own queue prefix.

mod decisions;
mod harness;
mod model;
mod poison;
mod process;
mod resilience;
