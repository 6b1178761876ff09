//! `payments-api`: configuration from the environment (see README), then serve.

use payments_api::config::Config;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    paysys_core::telemetry::init_logging();
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(error) => {
            eprintln!("payments-api: {error}");
            return std::process::ExitCode::from(2);
        }
    };
    tracing::info!(?config, "starting payments API");
    let listener = match tokio::net::TcpListener::bind(("0.0.0.0", config.port)).await {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!(
                "payments-api: cannot listen on port {} (PORT): {error}",
                config.port
            );
            return std::process::ExitCode::from(2);
        }
    };
    match payments_api::run(config, listener, paysys_core::shutdown::signal()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "payments API failed");
            std::process::ExitCode::FAILURE
        }
    }
}
