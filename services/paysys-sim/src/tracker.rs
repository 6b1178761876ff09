//! [`HistoryTracker`]: the `velocity` and `history` the payments API sends with a payment,
//! computed in memory from the payments seen so far, in creation order.
//!
//! The API computes the same numbers in SQL when it accepts a payment; the simulator computes
//! them here so that a month of traffic can be generated in minutes without forging any
//! service's clock. The definitions are the doc comments of [`Velocity`] and [`History`] in
//! `paysys_core::messages` (every count "before this payment, this one excluded"), and the
//! velocity window is the API's: a payment is inside the window of a payment at `t` when it
//! was created strictly after `t - window` (`created_at > at - window`, migrations 0004/0005).
//! `tests/live_agrees.rs` proves the two implementations agree on a live run.

use std::collections::{HashMap, HashSet, VecDeque};

use chrono::{DateTime, TimeDelta, Utc};
use paysys_core::messages::{History, Velocity};
use paysys_core::{Currency, Money};
use uuid::Uuid;

/// The payments API's default `VELOCITY_WINDOW_SECONDS`.
pub const DEFAULT_WINDOW_SECONDS: u64 = 3600;

/// One payment as the tracker needs it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Seen {
    pub user_id: Uuid,
    pub payee_id: Uuid,
    pub payment_method_id: Uuid,
    pub money: Money,
    pub created_at: DateTime<Utc>,
}

/// What the API knew when it accepted a payment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Known {
    pub velocity: Velocity,
    pub history: History,
}

/// A payment older than one already seen: the API never creates those (creation times are
/// monotone per payer), and the window counts would be wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "a payment created at {created_at} after one created at {latest}: payments must come in creation order"
)]
pub struct OutOfOrder {
    pub created_at: DateTime<Utc>,
    pub latest: DateTime<Utc>,
}

/// Payer, payee and method state, updated once per payment: every lookup costs the same
/// whatever the history (the window queues hold only the window's payments).
#[derive(Debug)]
pub struct HistoryTracker {
    window_seconds: u64,
    window: TimeDelta,
    latest: Option<DateTime<Utc>>,
    payers: HashMap<Uuid, Payer>,
    /// Payments per payment method, any payer.
    methods: HashMap<Uuid, u64>,
    /// Creation times of each payee's payments inside the window of the latest one.
    payees: HashMap<Uuid, VecDeque<DateTime<Utc>>>,
}

#[derive(Debug)]
struct Payer {
    payments: u64,
    first_at: DateTime<Utc>,
    /// Count and total (minor units) per currency.
    currencies: HashMap<Currency, (u64, i64)>,
    payees: HashSet<Uuid>,
    methods: HashSet<Uuid>,
    /// The payer's payments inside the window of its latest one.
    recent: VecDeque<(DateTime<Utc>, Money)>,
}

impl HistoryTracker {
    pub fn new(window_seconds: u64) -> Self {
        Self {
            window_seconds,
            window: TimeDelta::seconds(i64::try_from(window_seconds).unwrap_or(i64::MAX / 1000)),
            latest: None,
            payers: HashMap::new(),
            methods: HashMap::new(),
            payees: HashMap::new(),
        }
    }

    /// What the API would send with `payment`, then records it. Payments must come in
    /// creation order (equal times are allowed: they count as earlier, in call order).
    pub fn observe(&mut self, payment: &Seen) -> Result<Known, OutOfOrder> {
        let at = payment.created_at;
        if let Some(latest) = self.latest
            && at < latest
        {
            return Err(OutOfOrder {
                created_at: at,
                latest,
            });
        }
        self.latest = Some(at);
        let window_start = at - self.window;
        let in_window = |t: &DateTime<Utc>| *t > window_start;

        let payer = self.payers.entry(payment.user_id).or_insert_with(|| Payer {
            payments: 0,
            first_at: at,
            currencies: HashMap::new(),
            payees: HashSet::new(),
            methods: HashSet::new(),
            recent: VecDeque::new(),
        });
        while payer.recent.front().is_some_and(|(t, _)| !in_window(t)) {
            payer.recent.pop_front();
        }
        let velocity = Velocity {
            window_seconds: self.window_seconds,
            count: payer.recent.len() as u64,
            total_minor: payer
                .recent
                .iter()
                .filter(|(_, m)| m.currency == payment.money.currency)
                .map(|(_, m)| m.minor)
                .sum(),
        };
        let (currency_count, currency_total) = payer
            .currencies
            .get(&payment.money.currency)
            .copied()
            .unwrap_or_default();
        let method_count = self.methods.entry(payment.payment_method_id).or_default();
        let payee_window = self.payees.entry(payment.payee_id).or_default();
        while payee_window.front().is_some_and(|t| !in_window(t)) {
            payee_window.pop_front();
        }
        let history = History {
            payer_payment_count: payer.payments,
            payer_first_payment_at: (payer.payments > 0).then_some(payer.first_at),
            payer_currency_count: currency_count,
            payer_currency_total_minor: currency_total,
            new_payee: !payer.payees.contains(&payment.payee_id),
            new_payment_method: !payer.methods.contains(&payment.payment_method_id),
            method_payment_count: *method_count,
            payee_window_count: payee_window.len() as u64,
        };

        payer.payments += 1;
        let totals = payer.currencies.entry(payment.money.currency).or_default();
        totals.0 += 1;
        totals.1 += payment.money.minor;
        payer.payees.insert(payment.payee_id);
        payer.methods.insert(payment.payment_method_id);
        payer.recent.push_back((at, payment.money));
        *method_count += 1;
        payee_window.push_back(at);
        Ok(Known { velocity, history })
    }
}
