//! HistoryTracker on hand-made sequences: every number of `Velocity` and `History`, at the
//! window's edges, across currencies, payers, payees and methods.

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use paysys_core::messages::{History, Velocity};
use paysys_core::{Currency, Money};
use paysys_sim::tracker::{HistoryTracker, Seen};
use uuid::Uuid;

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 2, 10, 0, 0).unwrap()
}

fn money(minor: i64, code: &str) -> Money {
    Money {
        minor,
        currency: code.parse::<Currency>().unwrap(),
    }
}

fn id(n: u128) -> Uuid {
    Uuid::from_u128(n)
}

fn seen(payer: u128, payee: u128, method: u128, m: Money, seconds: i64) -> Seen {
    Seen {
        user_id: id(payer),
        payee_id: id(payee),
        payment_method_id: id(method),
        money: m,
        created_at: t0() + TimeDelta::seconds(seconds),
    }
}

#[test]
fn a_first_payment_knows_nothing() {
    let mut tracker = HistoryTracker::new(3600);
    let known = tracker
        .observe(&seen(1, 100, 1000, money(500, "USD"), 0))
        .unwrap();
    assert_eq!(
        known.velocity,
        Velocity {
            window_seconds: 3600,
            count: 0,
            total_minor: 0
        }
    );
    assert_eq!(
        known.history,
        History {
            payer_payment_count: 0,
            payer_first_payment_at: None,
            payer_currency_count: 0,
            payer_currency_total_minor: 0,
            new_payee: true,
            new_payment_method: true,
            method_payment_count: 0,
            payee_window_count: 0,
        }
    );
}

#[test]
fn history_counts_everything_before_this_payment() {
    let mut tracker = HistoryTracker::new(3600);
    // Payer 1: USD 5.00, EUR 7.00, USD 3.00, to payees 100, 100, 101, with methods 1000, 1001.
    tracker
        .observe(&seen(1, 100, 1000, money(500, "USD"), 0))
        .unwrap();
    tracker
        .observe(&seen(1, 100, 1001, money(700, "EUR"), 60))
        .unwrap();
    // Another payer uses method 1000 and pays payee 101.
    tracker
        .observe(&seen(2, 101, 1000, money(900, "USD"), 90))
        .unwrap();
    let known = tracker
        .observe(&seen(1, 101, 1000, money(300, "USD"), 120))
        .unwrap();
    assert_eq!(
        known.history,
        History {
            payer_payment_count: 2,
            payer_first_payment_at: Some(t0()),
            payer_currency_count: 1,
            payer_currency_total_minor: 500,
            // Payer 1 never paid 101 (payer 2 did: that does not count).
            new_payee: true,
            new_payment_method: false,
            // Two earlier payments with 1000: payer 1's and payer 2's.
            method_payment_count: 2,
            payee_window_count: 1,
        }
    );
    assert_eq!(
        known.velocity,
        Velocity {
            window_seconds: 3600,
            // Any currency.
            count: 2,
            // This payment's currency only.
            total_minor: 500,
        }
    );
    // The next one of payer 1, in EUR, to 101 again: now neither new payee nor method.
    let known = tracker
        .observe(&seen(1, 101, 1001, money(100, "EUR"), 150))
        .unwrap();
    assert_eq!(known.history.payer_payment_count, 3);
    assert_eq!(known.history.payer_currency_count, 1);
    assert_eq!(known.history.payer_currency_total_minor, 700);
    assert!(!known.history.new_payee);
    assert!(!known.history.new_payment_method);
    assert_eq!(known.history.method_payment_count, 1);
    assert_eq!(known.history.payee_window_count, 2);
    assert_eq!(known.velocity.count, 3);
    assert_eq!(known.velocity.total_minor, 700);
}

#[test]
fn the_window_excludes_a_payment_exactly_one_window_old() {
    let mut tracker = HistoryTracker::new(60);
    tracker
        .observe(&seen(1, 100, 1000, money(100, "USD"), 0))
        .unwrap();
    tracker
        .observe(&seen(2, 100, 1001, money(100, "USD"), 1))
        .unwrap();
    // 60 s after the first: `created_at > at - window` is false for it, true for the second.
    let known = tracker
        .observe(&seen(1, 100, 1000, money(200, "USD"), 60))
        .unwrap();
    assert_eq!(known.velocity.count, 0);
    assert_eq!(known.velocity.total_minor, 0);
    assert_eq!(known.history.payee_window_count, 1);
    // Lifetime counts never expire.
    assert_eq!(known.history.payer_payment_count, 1);
    assert_eq!(known.history.payer_currency_total_minor, 100);
    assert_eq!(known.history.method_payment_count, 1);

    // One microsecond less than a window old: inside.
    let mut tracker = HistoryTracker::new(60);
    tracker
        .observe(&seen(1, 100, 1000, money(100, "USD"), 0))
        .unwrap();
    let mut edge = seen(1, 100, 1000, money(200, "USD"), 60);
    edge.created_at -= TimeDelta::microseconds(1);
    let known = tracker.observe(&edge).unwrap();
    assert_eq!(known.velocity.count, 1);
    assert_eq!(known.velocity.total_minor, 100);
    assert_eq!(known.history.payee_window_count, 1);
}

#[test]
fn a_long_quiet_payer_has_an_empty_window_and_its_whole_history() {
    let mut tracker = HistoryTracker::new(3600);
    for i in 0..5 {
        tracker
            .observe(&seen(1, 100 + i, 1000, money(1000, "GBP"), i as i64 * 600))
            .unwrap();
    }
    let known = tracker
        .observe(&seen(1, 100, 1000, money(50, "GBP"), 86_400))
        .unwrap();
    assert_eq!(known.velocity.count, 0);
    assert_eq!(known.history.payer_payment_count, 5);
    assert_eq!(known.history.payer_currency_count, 5);
    assert_eq!(known.history.payer_currency_total_minor, 5000);
    assert_eq!(known.history.payer_first_payment_at, Some(t0()));
    assert_eq!(known.history.payee_window_count, 0);
    assert!(!known.history.new_payee);
}

#[test]
fn payments_out_of_creation_order_are_refused() {
    let mut tracker = HistoryTracker::new(3600);
    tracker
        .observe(&seen(1, 100, 1000, money(100, "USD"), 10))
        .unwrap();
    // Equal times are allowed (the API may stamp two payments alike).
    tracker
        .observe(&seen(2, 100, 1000, money(100, "USD"), 10))
        .unwrap();
    let error = tracker
        .observe(&seen(3, 100, 1000, money(100, "USD"), 9))
        .unwrap_err();
    assert!(error.to_string().contains("creation order"), "{error}");
}
