//! The suite's summary table.

use std::time::Duration;

use crate::driver::DriverStats;
use crate::invariants::{Verdict, Webhooks};

pub struct Row {
    pub scenario: String,
    pub stats: DriverStats,
    pub verdict: Verdict,
    /// From the end of the fault until undecided payments were back to their normal level
    /// (None: the system never drained).
    pub recovery: Option<Duration>,
}

pub fn table(rows: &[Row]) -> String {
    let mut out = String::from(
        "| scenario | sent | accepted | decided | lost | duplicated | unacknowledged 201s | 503s | recovery after the fault | webhook events | events lost | redelivered | failed attempts |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for row in rows {
        let webhooks = |value: fn(&Webhooks) -> usize| {
            row.verdict
                .webhooks
                .as_ref()
                .map_or("-".to_owned(), |w| value(w).to_string())
        };
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            row.scenario,
            row.stats.sent,
            row.verdict.accepted,
            row.verdict.decided,
            row.verdict.lost,
            row.verdict.duplicated,
            row.verdict.unacknowledged,
            row.stats.statuses.get(&503).copied().unwrap_or(0),
            row.recovery.map_or("not settled".to_owned(), |d| format!(
                "{:.1} s",
                d.as_secs_f64()
            )),
            webhooks(|w| w.events),
            webhooks(|w| w.lost),
            webhooks(|w| w.redelivered),
            webhooks(|w| w.failed_attempts),
        ));
    }
    out
}
