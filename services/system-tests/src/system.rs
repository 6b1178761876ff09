//! A whole paysys on this machine: payments API and risk engine replicas as processes, with
//! PostgreSQL and RabbitMQ each reached through a [`FaultProxy`] that scenarios can cut; on
//! servers of the system's own ([`Private`]) when a scenario crashes the server itself.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use paysys_testkit::private_broker::PrivateBroker;
use paysys_testkit::private_postgres::PrivatePostgres;
use paysys_testkit::{FaultProxy, TestBroker, TestDb};
use sqlx::PgPool;

use crate::process::{Service, binary};
use paysys_testkit::free_port;

pub const API_KEY: &str = "system-test-key-0123456789";

/// How the services reach PostgreSQL and RabbitMQ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    /// Through the fault proxies, which scenarios cut and slow.
    Proxied,
    /// Straight, as in a deployment.
    Direct,
}

pub struct System {
    pub db: TestDb,
    pub broker: TestBroker,
    /// Direct (unproxied) pool for the harness's own checks.
    pub pool: PgPool,
    pub amqp_proxy: FaultProxy,
    pub pg_proxy: FaultProxy,
    pub apis: Vec<Service>,
    pub risks: Vec<Service>,
    pub log_dir: PathBuf,
    /// The test's own RabbitMQ node, when the scenario kills the broker itself.
    pub private_broker: Option<PrivateBroker>,
    /// The test's own PostgreSQL server, when the scenario crashes the database itself
    /// (last: it stops after the services are killed).
    pub private_postgres: Option<PrivatePostgres>,
}

/// Which servers a system gets of its own instead of the shared ones.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Private {
    pub broker: bool,
    pub postgres: bool,
}

impl System {
    /// Starts `apis` payments-API and `risks` risk-engine processes (random mode, p = 0.7,
    /// seed 42) and waits until all are ready.
    pub async fn start(apis: usize, risks: usize) -> System {
        Self::start_with(apis, risks, &[]).await
    }

    /// Like [`System::start`], with extra risk-engine environment (`RISK_MODE`, ...).
    pub async fn start_with(apis: usize, risks: usize, risk_env: &[(&str, &str)]) -> System {
        Self::start_configured(apis, risks, &[], risk_env).await
    }

    /// Like [`System::start`], with extra environment for the APIs and the risk engines.
    pub async fn start_configured(
        apis: usize,
        risks: usize,
        api_env: &[(&str, &str)],
        risk_env: &[(&str, &str)],
    ) -> System {
        Self::start_routed(
            apis,
            risks,
            api_env,
            risk_env,
            Private::default(),
            Route::Proxied,
        )
        .await
    }

    /// Like [`System::start_configured`], with the services connected straight to PostgreSQL
    /// and RabbitMQ, as they are in a deployment: for benchmarks, which measure the services,
    /// not the proxies (there, every database and broker round trip would cross one more
    /// process and cost the machine's two cores a copy). The proxies exist but carry nothing,
    /// so no fault can be injected.
    pub async fn start_unproxied(
        apis: usize,
        risks: usize,
        api_env: &[(&str, &str)],
        risk_env: &[(&str, &str)],
    ) -> System {
        Self::start_routed(
            apis,
            risks,
            api_env,
            risk_env,
            Private::default(),
            Route::Direct,
        )
        .await
    }

    /// Like [`System::start`], on a RabbitMQ node of its own (see [`PrivateBroker`]).
    pub async fn start_on_private_broker(apis: usize, risks: usize) -> System {
        let private = Private {
            broker: true,
            postgres: false,
        };
        Self::start_routed(apis, risks, &[], &[], private, Route::Proxied).await
    }

    /// Like [`System::start_configured`], on the servers of its own that `private` names
    /// (see [`PrivateBroker`] and [`PrivatePostgres`]).
    pub async fn start_on(
        apis: usize,
        risks: usize,
        api_env: &[(&str, &str)],
        private: Private,
    ) -> System {
        Self::start_routed(apis, risks, api_env, &[], private, Route::Proxied).await
    }

    async fn start_routed(
        apis: usize,
        risks: usize,
        api_env: &[(&str, &str)],
        risk_env: &[(&str, &str)],
        private: Private,
        route: Route,
    ) -> System {
        let private_broker = if private.broker {
            Some(PrivateBroker::start().await)
        } else {
            None
        };
        let private_postgres = if private.postgres {
            Some(PrivatePostgres::start().await)
        } else {
            None
        };
        let db = match &private_postgres {
            Some(server) => server.database(),
            None => TestDb::create().await,
        };
        let mut broker = TestBroker::new();
        if let Some(private) = &private_broker {
            broker.url = private.url();
        }
        let pool = db.pool().await;
        let (amqp_proxy, mut amqp_url) = FaultProxy::in_front_of(&broker.url).await;
        let (pg_proxy, mut database_url) = FaultProxy::in_front_of(&db.url).await;
        if route == Route::Direct {
            (amqp_url, database_url) = (broker.url.clone(), db.url.clone());
        }
        let log_dir = std::env::temp_dir()
            .join("paysys-system-tests")
            .join(&broker.prefix);
        std::fs::create_dir_all(&log_dir).expect("log directory");

        let common = |port: u16| -> BTreeMap<String, String> {
            [
                ("PORT", port.to_string()),
                ("AMQP_URL", amqp_url.clone()),
                ("AMQP_PREFIX", broker.prefix.clone()),
                ("RUST_LOG", "info".into()),
                ("PATH", std::env::var("PATH").unwrap_or_default()),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect()
        };
        let apis = (0..apis)
            .map(|i| {
                let mut env = common(free_port());
                env.insert("DATABASE_URL".into(), database_url.clone());
                env.insert("API_KEYS".into(), format!("driver={API_KEY}"));
                env.insert("RATE_LIMIT_PER_SECOND".into(), "0".into());
                env.insert("DB_MAX_CONNECTIONS".into(), "6".into());
                env.insert("OUTBOX_POLL_INTERVAL_MS".into(), "100".into());
                env.insert("REQUEST_TIMEOUT_MS".into(), "3000".into());
                for (key, value) in api_env {
                    env.insert((*key).to_owned(), (*value).to_owned());
                }
                Service::new(
                    &format!("payments-api-{i}"),
                    binary("payments-api"),
                    env,
                    &log_dir,
                )
            })
            .collect();
        let risks = (0..risks)
            .map(|i| {
                let mut env = common(free_port());
                env.insert("RISK_MODE".into(), "random".into());
                env.insert("RISK_APPROVAL_PROBABILITY".into(), "0.7".into());
                env.insert("RISK_SEED".into(), "42".into());
                for (key, value) in risk_env {
                    env.insert((*key).to_owned(), (*value).to_owned());
                }
                Service::new(
                    &format!("risk-engine-{i}"),
                    binary("risk-engine"),
                    env,
                    &log_dir,
                )
            })
            .collect();
        let mut system = System {
            db,
            broker,
            pool,
            amqp_proxy,
            pg_proxy,
            apis,
            risks,
            log_dir,
            private_broker,
            private_postgres,
        };
        for service in system.apis.iter_mut().chain(system.risks.iter_mut()) {
            service.start();
        }
        system.wait_ready(Duration::from_secs(60)).await;
        system
    }

    /// Base URLs of every API replica (killed ones refuse connections).
    pub fn api_urls(&self) -> Vec<String> {
        self.apis
            .iter()
            .map(|api| format!("http://127.0.0.1:{}", api.port()))
            .collect()
    }

    /// Waits until every running service answers `/readyz` with 200.
    pub async fn wait_ready(&self, timeout: Duration) {
        let client = crate::driver::http_client();
        let deadline = Instant::now() + timeout;
        for service in self
            .apis
            .iter()
            .chain(self.risks.iter())
            .filter(|s| s.is_running())
        {
            let url = format!("http://127.0.0.1:{}/readyz", service.port());
            loop {
                if crate::driver::get_status(&client, &url).await == Some(200) {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "{} not ready; see {}",
                    service.name,
                    service.log_path().display()
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }

    /// Messages waiting in the payments and decisions queues.
    pub async fn queue_depths(&self) -> (u32, u32) {
        let (connection, channel) = self.broker.channel().await;
        let mut depths = [0u32; 2];
        for (depth, queue) in depths.iter_mut().zip([
            &self.broker.topology.payments_queue,
            &self.broker.topology.decisions_queue,
        ]) {
            let declared = channel
                .queue_declare(
                    queue.as_str().into(),
                    QueueDeclareOptions {
                        passive: true,
                        ..Default::default()
                    },
                    FieldTable::default(),
                )
                .await
                .expect("passive declare");
            *depth = declared.message_count();
        }
        // Bounded: a broker that stopped answering must not hang the test.
        let _ =
            tokio::time::timeout(Duration::from_secs(2), connection.close(200, "bye".into())).await;
        (depths[0], depths[1])
    }

    /// Payments not yet decided, and rows still in the outbox.
    pub async fn backlog(&self) -> (i64, i64) {
        sqlx::query_as(
            "SELECT (SELECT count(*) FROM payments WHERE status = 'pending'),
                    (SELECT count(*) FROM outbox)",
        )
        .fetch_one(&self.pool)
        .await
        .expect("backlog query")
    }

    /// Events not yet sequenced plus webhook deliveries not yet done, made or still to be
    /// fanned out (none when no endpoint is registered); None while the database cannot be
    /// read.
    pub async fn webhook_outbox(&self) -> Option<i64> {
        sqlx::query_scalar(
            "SELECT (SELECT count(*) FROM events_unsequenced)
                    + (SELECT count(*) FROM webhook_deliveries)
                    + (SELECT count(*) FROM webhook_endpoints e
                       JOIN events v ON v.principal = e.principal
                                    AND v.id > e.fanned_out_through
                       WHERE v.type = ANY (e.event_types))",
        )
        .fetch_one(&self.pool)
        .await
        .ok()
    }

    /// Waits until every payment is decided, the outbox and both queues are empty and every
    /// webhook delivered; returns how long that took, or None after `timeout`.
    pub async fn settle(&self, timeout: Duration) -> Option<Duration> {
        let started = Instant::now();
        while started.elapsed() < timeout {
            if self.backlog().await == (0, 0)
                && self.queue_depths().await == (0, 0)
                && self.webhook_outbox().await == Some(0)
            {
                return Some(started.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        None
    }

    /// Stops everything and deletes the test's queues.
    pub async fn shutdown(mut self) {
        for service in self.apis.iter_mut().chain(self.risks.iter_mut()) {
            service.terminate().await;
        }
        self.amqp_proxy.restore();
        self.pg_proxy.restore();
        self.broker.delete().await;
    }
}
