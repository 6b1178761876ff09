//! The payer's, payee's and payment method's history before each payment
//! ([`paysys_core::History`]: its doc comments are the exact semantics), computed incrementally
//! like velocity ([`super::velocity`]) when the payment is inserted, stored on its row and sent
//! with it to the risk engine (`relay::message_for`), where it feeds the risk model's features.
//!
//! Cost: every value is a running count kept in a table of its own (migration 0006:
//! `payer_history`, `payer_currency_history`, `payer_payees`, `payer_methods`,
//! `method_history`, `payee_history`), read by one probe per payer, payer and currency, pair,
//! method and payee, whatever their histories. The payee's payments inside the velocity window
//! are counted like the payer's velocity: each payment stores the payee's running count before
//! it (`payee_seq`), and the count in the window is the running count minus the one before the
//! payee's first payment inside the window (one index probe on `payments_payee_window`).
//!
//! Exact under concurrency (several writer groups, several API replicas): besides the payers'
//! rows (`velocity_payers`), `paysys_insert_payments` locks the payees' and the payment
//! methods' rows before it reads anything, in one global order (payers, payees, methods, each
//! sorted), so groups that share any of them run one after the other and never deadlock. Its
//! main statement then sees every earlier payment of each, and one creation time per group,
//! never below any of its payers' or payees' latest, keeps creation times monotone per payee
//! as well as per payer ("inside the window" is a suffix of the payee's payments).
//!
//! These rows are kept for good ("ever" counts): a payer's rows grow with the payees and
//! methods it uses, not with its payments.

use paysys_core::History;

use super::payments::PaymentRecord;

impl PaymentRecord {
    /// The history as the message carries it; `None` for payments accepted before the
    /// history existed (migration 0006: every column NULL), which are sent without one.
    pub fn history(&self) -> Option<History> {
        // Counts are never negative (running counts from 0).
        let count = |n: Option<i64>| n.map(|n| n.max(0) as u64);
        Some(History {
            payer_payment_count: count(self.history_payer_payment_count)?,
            payer_first_payment_at: self.history_payer_first_payment_at,
            payer_currency_count: count(self.history_payer_currency_count)?,
            payer_currency_total_minor: self.history_payer_currency_total_minor?,
            new_payee: self.history_new_payee?,
            new_payment_method: self.history_new_payment_method?,
            method_payment_count: count(self.history_method_payment_count)?,
            payee_window_count: count(self.history_payee_window_count)?,
        })
    }
}
