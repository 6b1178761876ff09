//! What must hold after a scenario settles.

use std::collections::HashSet;

use paysys_testkit::webhook_receiver::{self, Receiver};
use uuid::Uuid;

use crate::driver::DriverStats;
use crate::system::System;

/// The checked state of the system after a scenario.
#[derive(Debug, Clone, Default)]
pub struct Verdict {
    pub accepted: usize,
    /// Accepted payments with a final decision (approved or declined).
    pub decided: usize,
    /// Payments answered 201 that are not in the database.
    pub lost: usize,
    /// Payments decided more than once, or recorded with conflicting outcomes.
    pub duplicated: usize,
    /// Payments in the database still pending after the scenario settled.
    pub undecided: usize,
    /// Committed payments whose 201 never reached the client (the API died in between).
    /// Allowed, but they must be decided like any other.
    pub unacknowledged: usize,
    pub bad_5xx: u64,
    pub hangs: u64,
    /// What the merchant's receiver got, when one was subscribed.
    pub webhooks: Option<Webhooks>,
}

/// The events of the run against what a receiver subscribed to all of them accepted.
#[derive(Debug, Clone, Default)]
pub struct Webhooks {
    /// Events written (one per change of a payment, by the database's triggers).
    pub events: usize,
    /// Events the receiver never accepted.
    pub lost: usize,
    /// Deliveries of an event already accepted (allowed: delivery is at least once).
    pub redelivered: usize,
    /// A payment whose events first arrived out of order: (payment, event, the later one
    /// that came before it).
    pub out_of_order: Option<(String, i64, i64)>,
    /// Requests whose signature or event id did not verify.
    pub bad_signatures: usize,
    /// Delivery attempts that failed (refused, 5xx, timed out): the receiver's faults show
    /// here.
    pub failed_attempts: usize,
}

impl Verdict {
    /// Every invariant at once, as a list of what failed.
    pub fn failures(&self) -> Vec<String> {
        let mut failures = Vec::new();
        let mut fail = |ok: bool, what: String| {
            if !ok {
                failures.push(what);
            }
        };
        fail(
            self.lost == 0,
            format!("{} accepted payments lost", self.lost),
        );
        fail(
            self.duplicated == 0,
            format!("{} payments decided twice", self.duplicated),
        );
        fail(
            self.undecided == 0,
            format!("{} payments never decided", self.undecided),
        );
        fail(
            self.decided == self.accepted,
            format!(
                "{} of {} accepted payments decided",
                self.decided, self.accepted
            ),
        );
        fail(
            self.bad_5xx == 0,
            format!("{} 5xx answers other than 503 + Retry-After", self.bad_5xx),
        );
        fail(self.hangs == 0, format!("{} requests hung", self.hangs));
        if let Some(webhooks) = &self.webhooks {
            fail(
                webhooks.lost == 0,
                format!(
                    "{} of {} webhook events never delivered",
                    webhooks.lost, webhooks.events
                ),
            );
            fail(
                webhooks.out_of_order.is_none(),
                format!("webhook events out of order: {:?}", webhooks.out_of_order),
            );
            fail(
                webhooks.bad_signatures == 0,
                format!(
                    "{} webhook requests with a bad signature",
                    webhooks.bad_signatures
                ),
            );
        }
        failures
    }
}

pub async fn check(system: &System, stats: &DriverStats, receiver: Option<&Receiver>) -> Verdict {
    let accepted: HashSet<Uuid> = stats.accepted.iter().copied().collect();
    let rows: Vec<(Uuid, String)> = sqlx::query_as("SELECT id, status FROM payments")
        .fetch_all(&system.pool)
        .await
        .expect("payments");
    let in_db: HashSet<Uuid> = rows.iter().map(|(id, _)| *id).collect();
    let decided = rows
        .iter()
        .filter(|(id, status)| {
            accepted.contains(id) && (status == "approved" || status == "declined")
        })
        .count();
    let undecided = rows
        .iter()
        .filter(|(_, status)| status == "pending")
        .count();
    // Decided twice: more than one applied decision, or a later decision that disagreed
    // with the one applied (redeliveries of the same verdict are recorded and harmless).
    let duplicated: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM payments p
         WHERE (SELECT count(*) FROM payment_events e
                WHERE e.payment_id = p.id AND e.cause = 'risk_decision') > 1
            OR EXISTS (SELECT 1 FROM payment_events e
                       WHERE e.payment_id = p.id AND e.cause = 'risk_decision_ignored'
                         AND e.detail->>'outcome' <> p.status)",
    )
    .fetch_one(&system.pool)
    .await
    .expect("duplicates");
    Verdict {
        accepted: accepted.len(),
        decided,
        lost: accepted.difference(&in_db).count(),
        duplicated: duplicated as usize,
        undecided,
        unacknowledged: in_db.difference(&accepted).count(),
        bad_5xx: stats.bad_5xx,
        hangs: stats.hangs,
        webhooks: match receiver {
            Some(receiver) => Some(check_webhooks(system, receiver).await),
            None => None,
        },
    }
}

/// Every event written (all of the driver's) against what `receiver` accepted.
async fn check_webhooks(system: &System, receiver: &Receiver) -> Webhooks {
    let events: HashSet<i64> = sqlx::query_scalar::<_, i64>("SELECT id FROM events")
        .fetch_all(&system.pool)
        .await
        .expect("events")
        .into_iter()
        .collect();
    let failed_attempts: i64 =
        sqlx::query_scalar("SELECT count(*) FROM webhook_attempts WHERE error IS NOT NULL")
            .fetch_one(&system.pool)
            .await
            .expect("failed attempts");
    let accepted = receiver.accepted();
    let delivered = receiver.distinct();
    Webhooks {
        events: events.len(),
        lost: events.difference(&delivered).count(),
        redelivered: accepted.len() - delivered.len(),
        out_of_order: webhook_receiver::out_of_order(&accepted),
        bad_signatures: receiver.bad_signatures(),
        failed_attempts: failed_attempts as usize,
    }
}
