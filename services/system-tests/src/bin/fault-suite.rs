//! The full fault-injection suite: every scenario at higher load with repeated faults, then a
//! table of the results. `cargo run --release -p paysys-system-tests --bin fault-suite`
//! (`--short` for the quick versions the test command runs, `--only "<scenario>"` to pick).

use paysys_system_tests::{report, scenarios};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let short = std::env::args().any(|arg| arg == "--short");
    let suite = if short {
        scenarios::short()
    } else {
        scenarios::full()
    };
    let mut rows = Vec::new();
    for scenario in &suite {
        eprintln!(
            "running: {} ({} payments/s for {:?})",
            scenario.name, scenario.rate, scenario.duration
        );
        rows.push(scenarios::run(scenario).await);
    }
    println!("{}", report::table(&rows));
    let failed: Vec<_> = rows
        .iter()
        .filter(|row| !row.verdict.failures().is_empty() || row.recovery.is_none())
        .map(|row| format!("{}: {:?}", row.scenario, row.verdict.failures()))
        .collect();
    if failed.is_empty() {
        std::process::ExitCode::SUCCESS
    } else {
        eprintln!("FAILED: {failed:#?}");
        std::process::ExitCode::FAILURE
    }
}
