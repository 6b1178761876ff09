//! What must hold after a scenario settles.

use std::collections::HashSet;

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
        failures
    }
}

pub async fn check(system: &System, stats: &DriverStats) -> Verdict {
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
    }
}
