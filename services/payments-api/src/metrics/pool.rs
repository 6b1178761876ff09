//! `paysys_db_pool_*`: the process's PostgreSQL connection pool, read at each scrape.
//!
//! sqlx reports how many connections the pool holds and how many of them are idle; it does
//! not say how many tasks wait for a connection (its waiters are inside its semaphore, not
//! counted anywhere it exposes). A pool at its maximum with no idle connection is the sign:
//! requests then wait up to the acquire timeout (3 s) and answer 503.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::gauge::ConstGauge;
use sqlx::PgPool;

#[derive(Debug)]
pub struct PoolCollector {
    pool: PgPool,
}

impl PoolCollector {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }
}

impl Collector for PoolCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        // Two readings of a pool in use: a connection may change hands between them, so the
        // idle count is capped by the size just read.
        let open = i64::from(self.pool.size());
        let idle = i64::try_from(self.pool.num_idle())
            .unwrap_or(i64::MAX)
            .min(open);
        let mut connections = encoder.encode_descriptor(
            "db_pool_connections",
            "Connections the database pool holds open, by state (idle, in_use); their sum is the pool's size",
            None,
            MetricType::Gauge,
        )?;
        for (state, value) in [("idle", idle), ("in_use", open - idle)] {
            let labels = [("state", state)];
            ConstGauge::new(value).encode(connections.encode_family(&labels)?)?;
        }
        let max = i64::from(self.pool.options().get_max_connections());
        let metric = encoder.encode_descriptor(
            "db_pool_max_connections",
            "Most connections the database pool opens (DB_MAX_CONNECTIONS)",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(max).encode(metric)
    }
}
