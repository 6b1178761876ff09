//! The suite's summary table.

use std::time::Duration;

use crate::driver::DriverStats;
use crate::invariants::Verdict;

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
        "| scenario | sent | accepted | decided | lost | duplicated | unacknowledged 201s | 503s | recovery after the fault |\n|---|---|---|---|---|---|---|---|---|\n",
    );
    for row in rows {
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
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
        ));
    }
    out
}
