//! Test support shared by every crate's integration tests.
//!
//! Tests run against the real PostgreSQL and RabbitMQ (see `scripts/test.sh`, which finds or
//! starts them). Each test gets its own database and its own queue-name prefix, so tests run
//! in parallel and leftovers of earlier runs never interfere. Operator tests get a real
//! Kubernetes control plane from [`envtest`]. Faults the shared servers must not suffer run on
//! servers of the test's own ([`private_broker`], [`private_postgres`]).

pub mod envtest;
pub mod pod_template;
pub mod private_broker;
pub mod private_postgres;
mod proxy;
pub mod webhook_receiver;

use std::time::Duration;

use paysys_core::topology::Topology;
use sqlx::Connection;
use uuid::Uuid;

pub use proxy::FaultProxy;

/// Server URL of PostgreSQL (a database to connect to for `CREATE DATABASE`).
pub fn admin_database_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// URL of RabbitMQ.
pub fn amqp_url() -> String {
    std::env::var("AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

/// A local TCP port nothing listens on at the moment of asking.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("an ephemeral port")
        .port()
}

/// A name no other test uses: `<what>_<random>`.
pub fn unique_name(what: &str) -> String {
    format!("{what}_{}", Uuid::new_v4().simple())
}

/// A fresh, empty database for one test. Databases are named `paysys_test_*`; the test
/// script drops those left from earlier runs before it starts.
pub struct TestDb {
    pub name: String,
    pub url: String,
}

impl TestDb {
    pub async fn create() -> TestDb {
        let admin_url = admin_database_url();
        let name = unique_name("paysys_test");
        let mut admin = sqlx::PgConnection::connect(&admin_url)
            .await
            .unwrap_or_else(|e| panic!("cannot reach PostgreSQL at {admin_url}: {e}"));
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .execute(&mut admin)
            .await
            .expect("CREATE DATABASE");
        let url = with_database(&admin_url, &name);
        TestDb { name, url }
    }

    /// A small pool: many tests run at once and the server allows 100 connections.
    pub async fn pool(&self) -> sqlx::PgPool {
        sqlx::postgres::PgPoolOptions::new()
            .max_connections(3)
            .connect(&self.url)
            .await
            .expect("connect to test database")
    }
}

/// Replaces the database name in a PostgreSQL URL.
pub fn with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let base = match base[scheme_end..].find('/') {
        Some(slash) => &base[..scheme_end + slash],
        None => base,
    };
    match query {
        Some(query) => format!("{base}/{database}?{query}"),
        None => format!("{base}/{database}"),
    }
}

/// RabbitMQ names private to one test. The one made by [`TestBroker::new`] deletes its
/// queues and exchanges when dropped, even when the test panics: each quorum queue holds
/// about three of RabbitMQ's file handles, and a run's worth of leftovers would exhaust the
/// broker's limit (it follows `ulimit -n`, 1024 by default), after which it accepts no
/// connection at all.
pub struct TestBroker {
    pub url: String,
    pub prefix: String,
    pub topology: Topology,
    /// Whether dropping this deletes the topology (false for [`TestBroker::sharing`]).
    owner: bool,
}

impl TestBroker {
    pub fn new() -> TestBroker {
        let prefix = unique_name("paysys-test");
        TestBroker {
            url: amqp_url(),
            topology: Topology::new(&prefix),
            prefix,
            owner: true,
        }
    }

    /// The same names, reached at `url` (a proxy, or a private node); dropping it deletes
    /// nothing, the original does.
    pub fn sharing(&self, url: &str) -> TestBroker {
        TestBroker {
            url: url.to_owned(),
            prefix: self.prefix.clone(),
            topology: self.topology.clone(),
            owner: false,
        }
    }

    /// A connection and channel with the test's topology declared.
    pub async fn channel(&self) -> (lapin::Connection, lapin::Channel) {
        let connection = paysys_amqp::connect(&self.url, "paysys-test")
            .await
            .unwrap_or_else(|e| panic!("cannot reach RabbitMQ at {}: {e}", self.url));
        let channel = tokio::time::timeout(
            Duration::from_secs(30),
            paysys_amqp::open_confirm_channel(&connection, &self.topology),
        )
        .await
        .expect("RabbitMQ declared the topology within 30 s")
        .expect("declare topology");
        (connection, channel)
    }

    /// Takes one message from `queue`, waiting up to `timeout` for it to arrive.
    pub async fn get(
        &self,
        channel: &lapin::Channel,
        queue: &str,
        timeout: Duration,
    ) -> Option<lapin::message::BasicGetMessage> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let message = channel
                .basic_get(
                    queue.into(),
                    lapin::options::BasicGetOptions { no_ack: true },
                )
                .await
                .expect("basic.get");
            if message.is_some() || tokio::time::Instant::now() >= deadline {
                return message;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Deletes the test's queues (of both topology versions) and exchanges.
    pub async fn delete(&self) {
        let _ = delete_topology(&self.url, &self.topology).await;
    }
}

/// Deletes every queue (legacy ones included) and exchange of `topology` at `url`, each on a
/// channel of its own (a failed delete closes its channel).
async fn delete_topology(url: &str, topology: &Topology) -> lapin::Result<()> {
    let connection = paysys_amqp::connect(url, "paysys-test-cleanup").await?;
    let legacy = topology.legacy_queues().map(|binding| binding.queue);
    for queue in [
        &topology.payments_queue,
        &topology.decisions_queue,
        &topology.payments_dead_queue,
        &topology.decisions_dead_queue,
    ]
    .into_iter()
    .chain(&legacy)
    {
        let channel = connection.create_channel().await?;
        let _ = channel
            .queue_delete(queue.as_str().into(), Default::default())
            .await;
    }
    for exchange in [
        &topology.payments_exchange,
        &topology.decisions_exchange,
        &topology.dead_letter_exchange,
    ] {
        let channel = connection.create_channel().await?;
        let _ = channel
            .exchange_delete(exchange.as_str().into(), Default::default())
            .await;
    }
    paysys_amqp::close(&connection).await;
    Ok(())
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        if !self.owner {
            return;
        }
        let (url, topology) = (self.url.clone(), self.topology.clone());
        // A thread of its own: a drop cannot await, and may run inside a runtime.
        let cleanup = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async {
                let _ =
                    tokio::time::timeout(Duration::from_secs(10), delete_topology(&url, &topology))
                        .await;
            });
        });
        let _ = cleanup.join();
    }
}

impl Default for TestBroker {
    fn default() -> Self {
        Self::new()
    }
}

/// Polls `check` every 20 ms until it returns `Some` or `timeout` passes.
pub async fn eventually<T, F, Fut>(timeout: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return Some(value);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_the_database_name() {
        assert_eq!(
            with_database("postgres://u@h:5432/postgres", "x"),
            "postgres://u@h:5432/x"
        );
        assert_eq!(
            with_database("postgres://u@h:5432", "x"),
            "postgres://u@h:5432/x"
        );
        assert_eq!(
            with_database("postgres://u@h/db?sslmode=disable", "x"),
            "postgres://u@h/x?sslmode=disable"
        );
    }
}
