//! Rules mode: the operator's rule set, read once at start-up from `RISK_RULES_FILE` into
//! [`CompiledRules`], then evaluated against every payment.
//!
//! Compiling and evaluating live in `paysys_core::risk_rules`, so that the operator refuses a
//! rule set with the very checks the engine applies (a bad rule is a condition on the
//! `PaymentSystem`, not a crash loop of its pods); this module adds reading the file.

mod load;

pub use load::{Format, load_file, parse};
pub use paysys_core::risk_rules::{CompiledRules, Evaluation, RulesError, compile, is_hard};
