//! `risk-engine`: configuration from the environment (see docs/risk-engine.md), then run.

use risk_engine::config::Config;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    paysys_core::telemetry::init_logging();
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(error) => {
            eprintln!("risk-engine: {error}");
            return std::process::ExitCode::from(2);
        }
    };
    tracing::info!(?config, "starting risk engine");
    let listener = match tokio::net::TcpListener::bind(("0.0.0.0", config.port)).await {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!(
                "risk-engine: cannot listen on port {} (PORT): {error}",
                config.port
            );
            return std::process::ExitCode::from(2);
        }
    };
    match risk_engine::run(config, listener, paysys_core::shutdown::signal()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "risk engine failed");
            std::process::ExitCode::FAILURE
        }
    }
}
