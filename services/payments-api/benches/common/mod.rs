//! What the payments-api benchmarks share: the `payments-api` binary as its own process
//! against the real PostgreSQL and RabbitMQ, configured for load, and their settings.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use paysys_testkit::{TestBroker, TestDb};

pub const API_KEY: &str = "bench-key-0123456789abcdef";

/// A benchmark setting from the environment, else `default`.
pub fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The running API; stopped on drop.
pub struct Api(Child);

impl Drop for Api {
    fn drop(&mut self) {
        // SIGTERM for a graceful stop, then make sure.
        let _ = Command::new("kill").arg(self.0.id().to_string()).status();
        std::thread::sleep(Duration::from_millis(500));
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the API on `port` with `extra` settings on top of the load ones: the binary built
/// with the benchmark, or `BENCH_API_BIN` (another build of it, e.g. the previous commit's, to
/// compare the two in one session on the same machine).
pub fn start_api(db: &TestDb, broker: &TestBroker, port: u16, extra: &[(&str, String)]) -> Api {
    let binary = std::env::var("BENCH_API_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_payments-api").into());
    let child = Command::new(binary)
        .env("PORT", port.to_string())
        .env("DATABASE_URL", &db.url)
        .env("AMQP_URL", &broker.url)
        .env("AMQP_PREFIX", &broker.prefix)
        .env("API_KEYS", format!("bench={API_KEY}"))
        .env(
            "DB_MAX_CONNECTIONS",
            env_or("BENCH_DB_CONNECTIONS", 24).to_string(),
        )
        .env("RUST_LOG", "warn")
        // One principal drives the whole load: lift its rate limit.
        .env("RATE_LIMIT_PER_SECOND", "0")
        // No risk engine here (admission alone is measured): every payment stays undecided.
        .env("MAX_UNDECIDED", "0")
        .envs(extra.iter().map(|(name, value)| (name, value)))
        .stdout(Stdio::null())
        .spawn()
        .expect("start payments-api");
    Api(child)
}

/// Drops the benchmark's database when dropped (after the API, declared before it), so that a
/// run leaves nothing behind on the shared server, even when it panics.
pub struct DropDatabase(pub String);

impl Drop for DropDatabase {
    fn drop(&mut self) {
        let name = self.0.clone();
        // Its own runtime: this may run while the benchmark's is shutting down.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            runtime.block_on(async {
                use sqlx::Connection;
                if let Ok(mut admin) =
                    sqlx::PgConnection::connect(&paysys_testkit::admin_database_url()).await
                {
                    let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                        "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
                    )))
                    .execute(&mut admin)
                    .await;
                }
            });
        })
        .join();
    }
}
