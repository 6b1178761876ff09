//! `risk-engine`: configuration from the environment (see docs/risk-engine.md), then run.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    paysys_runtime::service::main(
        "risk-engine",
        risk_engine::config::Config::from_env,
        |config| config.port,
        risk_engine::run,
    )
    .await
}
