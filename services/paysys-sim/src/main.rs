//! `paysys-sim`: generate a story in simulated time (`history`) or drive it through the API
//! (`live`). docs/simulator.md.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use paysys_sim::{history, live};

#[derive(Parser)]
#[command(
    name = "paysys-sim",
    version,
    about = "Traffic simulator for the learning risk engine (docs/simulator.md)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate the story in simulated time and write it as the data feed plus a truth file.
    History(history::HistoryArgs),
    /// Drive the story through the real payments API at real time, then file its disputes.
    Live(live::LiveArgs),
}

fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::History(args) => history::run(&args).map(|summary| {
            println!("{}", history::describe(&summary));
        }),
        Command::Live(args) => tokio::runtime::Runtime::new()
            .map_err(anyhow::Error::from)
            .and_then(|runtime| runtime.block_on(live::run(&args)))
            .map(|summary| println!("{}", live::describe(&summary))),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("paysys-sim: {e:#}");
            ExitCode::FAILURE
        }
    }
}
