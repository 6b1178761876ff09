//! paysys-sim: traffic for the learning risk engine (issue 20, docs/simulator.md).
//!
//! A seeded story ([`story`]) of payers, payees and planted fraud, either served in simulated
//! time by serving's own code and written as the data feed ([`history`], through
//! [`serve`], [`tracker`] and [`feed`]), or driven through the real API at real time
//! ([`live`]). No service's clock is ever set: history mode computes what the API and the
//! risk engine would have computed, and a live run proves the two agree
//! (tests/live_agrees.rs).

pub mod feed;
pub mod history;
pub mod live;
pub mod serve;
pub mod story;
pub mod tracker;
