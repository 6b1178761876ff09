//! `payments-api`: configuration from the environment (see README), then serve; or, as
//! `payments-api smoke-test`, check a running API end to end (see `payments_api::smoke`).

#[tokio::main]
async fn main() -> std::process::ExitCode {
    if payments_api::smoke::requested() {
        return payments_api::smoke::main().await;
    }
    paysys_runtime::service::main(
        "payments-api",
        payments_api::config::Config::from_env,
        |config| config.port,
        payments_api::run,
    )
    .await
}
