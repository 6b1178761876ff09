//! The payments API's configuration, read once at start-up from environment variables.
//! A bad value stops the process with a message naming the variable.

use std::time::Duration;

use paysys_core::topology::{DEFAULT_PREFIX, Topology};
use paysys_runtime::config::{self, ConfigError, Source};
use rust_decimal::Decimal;

use crate::auth::{ApiKeys, JwtSettings};

#[derive(Clone)]
pub struct Config {
    pub port: u16,
    pub database_url: String,
    pub amqp_url: String,
    pub topology: Topology,
    pub api_keys: ApiKeys,
    pub jwt: Option<JwtSettings>,
    pub limits: Limits,
    pub db_max_connections: u32,
    pub velocity_window: Duration,
    pub relay: RelaySettings,
    pub webhooks: crate::webhooks::WebhookSettings,
}

/// Bounds on what a client may send.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest payment, in major units of any currency (a sanity bound, not a risk rule).
    pub max_amount: Decimal,
    pub max_body_bytes: usize,
    /// Longest a request may take before it is answered with 503.
    pub request_timeout: Duration,
    /// Sustained requests per second per principal (0: unlimited) and the burst allowed.
    pub rate_per_second: u32,
    pub rate_burst: u32,
    /// Requests processed at once; more answer 503 immediately.
    pub max_in_flight: usize,
    /// New payments answer 503 while more than this many wait for a decision (0: never).
    pub max_undecided: u64,
}

/// How the outbox relay batches and polls.
#[derive(Debug, Clone)]
pub struct RelaySettings {
    /// Relay loops per API process, each with its own broker connection.
    pub workers: usize,
    pub batch_size: i64,
    /// How often the relay looks for rows written by other replicas (its own commits wake it
    /// at once).
    pub poll_interval: Duration,
}

impl std::fmt::Debug for Config {
    /// Written by hand so neither keys nor the URLs' passwords can reach a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("port", &self.port)
            .field(
                "database_url",
                &paysys_runtime::config::redact_url(&self.database_url),
            )
            .field(
                "amqp_url",
                &paysys_runtime::config::redact_url(&self.amqp_url),
            )
            .field("topology", &self.topology.payments_exchange)
            .field("api_keys", &self.api_keys.len())
            .field("jwt", &self.jwt.as_ref().map(|jwt| jwt.algorithm))
            .field("limits", &self.limits)
            .field("db_max_connections", &self.db_max_connections)
            .field("velocity_window", &self.velocity_window)
            .field("relay", &self.relay)
            .field("webhooks", &self.webhooks)
            .finish()
    }
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_source(&config::Env)
    }

    pub fn from_source(source: &dyn Source) -> Result<Self, ConfigError> {
        let api_keys = ApiKeys::from_source(source)?;
        let jwt = JwtSettings::from_source(source)?;
        if api_keys.is_empty() && jwt.is_none() {
            return Err(ConfigError::new(
                "API_KEYS",
                "no credentials configured: set API_KEYS or API_KEYS_FILE, or JWT_ALGORITHM with its key",
            ));
        }
        let max_amount: Decimal = config::parse_or(source, "MAX_AMOUNT", Decimal::from(1_000_000))?;
        if max_amount <= Decimal::ZERO {
            return Err(ConfigError::new("MAX_AMOUNT", "must be greater than zero"));
        }
        let prefix = config::optional(source, "AMQP_PREFIX").unwrap_or(DEFAULT_PREFIX.into());
        let rate_per_second: u32 = config::parse_or(source, "RATE_LIMIT_PER_SECOND", 2000)?;
        Ok(Self {
            port: config::parse_or(source, "PORT", 5000)?,
            database_url: config::required(source, "DATABASE_URL")?,
            amqp_url: config::required(source, "AMQP_URL")?,
            topology: Topology::new(&prefix),
            api_keys,
            jwt,
            limits: Limits {
                max_amount,
                max_body_bytes: positive(source, "MAX_BODY_BYTES", 16 * 1024)?,
                request_timeout: Duration::from_millis(positive(
                    source,
                    "REQUEST_TIMEOUT_MS",
                    10_000,
                )?),
                rate_per_second,
                rate_burst: config::parse_or(
                    source,
                    "RATE_LIMIT_BURST",
                    rate_per_second.saturating_mul(2),
                )?,
                max_in_flight: positive(source, "MAX_IN_FLIGHT", 512)?,
                max_undecided: config::parse_or(source, "MAX_UNDECIDED", 10_000)?,
            },
            db_max_connections: positive(source, "DB_MAX_CONNECTIONS", 16)?,
            velocity_window: Duration::from_secs(positive(
                source,
                "VELOCITY_WINDOW_SECONDS",
                3600,
            )?),
            relay: RelaySettings {
                workers: positive(source, "RELAY_WORKERS", 2)?,
                batch_size: positive(source, "OUTBOX_BATCH_SIZE", 500)?,
                poll_interval: Duration::from_millis(positive(
                    source,
                    "OUTBOX_POLL_INTERVAL_MS",
                    250,
                )?),
            },
            webhooks: crate::webhooks::WebhookSettings::from_source(source)?,
        })
    }
}

fn positive<T>(source: &dyn Source, name: &str, default: T) -> Result<T, ConfigError>
where
    T: std::str::FromStr + PartialOrd + Default + Copy,
    T::Err: std::fmt::Display,
{
    let value = config::parse_or(source, name, default)?;
    if value <= T::default() {
        return Err(ConfigError::new(name, "must be greater than zero"));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: [(&str, &str); 3] = [
        ("DATABASE_URL", "postgres://localhost/db"),
        ("AMQP_URL", "amqp://localhost"),
        ("API_KEYS", "alice=secret-key-1-0123456789"),
    ];

    fn with(extra: (&'static str, &'static str)) -> std::collections::HashMap<String, String> {
        BASE.iter()
            .chain(std::iter::once(&extra))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_apply() {
        let config = Config::from_source(&BASE).unwrap();
        assert_eq!(config.port, 5000);
        assert_eq!(config.topology.payments_queue, "paysys.payments.v2");
        assert_eq!(config.limits.max_body_bytes, 16 * 1024);
    }

    #[test]
    fn bad_values_name_their_variable() {
        for (name, value) in [
            ("PORT", "http"),
            ("MAX_AMOUNT", "-5"),
            ("MAX_BODY_BYTES", "0"),
            ("DB_MAX_CONNECTIONS", "many"),
            ("JWT_ALGORITHM", "none"),
        ] {
            let error = Config::from_source(&with((name, value))).unwrap_err();
            assert_eq!(error.name, name, "{error}");
        }
        let error =
            Config::from_source(&[("AMQP_URL", "amqp://x"), ("API_KEYS", "a=0123456789abcdef")])
                .unwrap_err();
        assert_eq!(error.name, "DATABASE_URL");
    }

    #[test]
    fn webhooks_are_off_by_default_and_need_their_key() {
        let config = Config::from_source(&BASE).unwrap();
        assert!(!config.webhooks.enabled());
        assert_eq!(
            config.webhooks.retry_window,
            Duration::from_secs(3 * 24 * 3600)
        );
        let error = Config::from_source(&with(("WEBHOOKS_ENABLED", "true"))).unwrap_err();
        assert_eq!(error.name, "WEBHOOK_SECRETS_KEY");
        let mut env = with(("WEBHOOKS_ENABLED", "true"));
        env.insert("WEBHOOK_SECRETS_KEY".into(), "c2hvcnQ=".into());
        assert_eq!(
            Config::from_source(&env).unwrap_err().name,
            "WEBHOOK_SECRETS_KEY"
        );
        let key = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="; // 32 bytes
        env.insert("WEBHOOK_SECRETS_KEY".into(), key.into());
        let config = Config::from_source(&env).unwrap();
        assert!(config.webhooks.enabled());
        assert!(!format!("{config:?}").contains(key));
        for (name, value) in [
            ("WEBHOOK_ALLOWED_CIDRS", "10.0.0.0/99"),
            ("WEBHOOK_TIMEOUT_MS", "0"),
            ("WEBHOOK_RETRY_WINDOW_SECONDS", "soon"),
            ("WEBHOOK_ALLOW_HTTP", "perhaps"),
        ] {
            let mut env = env.clone();
            env.insert(name.into(), value.into());
            assert_eq!(Config::from_source(&env).unwrap_err().name, name);
        }
    }

    #[test]
    fn debug_output_hides_secrets() {
        let mut env = with(("JWT_ALGORITHM", "HS256"));
        env.insert(
            "JWT_SECRET".into(),
            "jwt-secret-value-long-enough-32b!".into(),
        );
        env.insert("AMQP_URL".into(), "amqp://guest:hunter2@rabbit".into());
        let shown = format!("{:?}", Config::from_source(&env).unwrap());
        for secret in ["secret-key-1", "jwt-secret-value", "hunter2"] {
            assert!(!shown.contains(secret), "{shown}");
        }
    }
}
