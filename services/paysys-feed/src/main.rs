//! `paysys-feed`: export payments to Parquet, report on them, make a Fernet key.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use paysys_feed::{export, key, report};

#[derive(Parser)]
#[command(
    name = "paysys-feed",
    version,
    about = "The paysys payments data feed (docs/data-feed.md)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Export payments from PostgreSQL to day-partitioned Parquet files.
    Export(export::ExportArgs),
    /// Totals per currency, converted totals and payments from Parquet files.
    Report(report::ReportArgs),
    /// Print a new random Fernet key (keep it secret; Python's Fernet reads it too).
    Keygen,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("paysys-feed: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Export(args) => export::run(&args).await.map(drop),
            Command::Report(args) => report::run(&args).await.map(drop),
            Command::Keygen => {
                println!("{}", key::generate());
                Ok(())
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("paysys-feed: {e:#}");
            ExitCode::FAILURE
        }
    }
}
