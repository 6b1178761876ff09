//! `payments-api`: configuration from the environment (see README), then serve.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    paysys_runtime::service::main(
        "payments-api",
        payments_api::config::Config::from_env,
        |config| config.port,
        payments_api::run,
    )
    .await
}
