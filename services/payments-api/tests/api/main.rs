//! Integration tests of the payments API against the real PostgreSQL and RabbitMQ.
//! One test binary (linking is the slow part); a module per concern.

mod harness;

mod auth;
mod conventions;
mod create;
mod decisions;
mod disputes;
mod history;
mod idempotency;
mod jwks;
mod lifecycle;
mod listing;
mod process;
mod protection;
mod refunds;
mod request_logs;
mod resilience;
mod status;
mod store;
mod validation;
mod velocity;
mod webhooks;
