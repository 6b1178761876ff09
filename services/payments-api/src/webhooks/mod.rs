//! Merchant webhooks: every change of a payment, delivered signed to the endpoints its owner
//! registered.
//!
//! Events are written by PostgreSQL triggers on `payments` (migration 0007) in the
//! transaction that makes the change, so no code path can change a payment without its
//! event. The dispatcher ([`dispatcher`]) gives them their public ids in commit order, fans
//! them out to the subscribed endpoints and delivers them at least once, in order per
//! endpoint and payment, with retries. Outbound calls go only to addresses [`outbound`]
//! allows. Secrets are encrypted at rest ([`secrets`]); each request is signed
//! ([`signature`]). Events and attempts are deleted once past their retention ([`retention`]).

pub mod dispatcher;
pub mod events;
pub mod outbound;
pub mod retention;
pub mod secrets;
pub mod signature;

use std::time::Duration;

use paysys_runtime::config::{self, ConfigError, Source};

pub use events::EventType;

/// The webhook settings, read with the rest of the configuration.
#[derive(Clone)]
pub struct WebhookSettings {
    /// The key that encrypts signing secrets; `None` when webhooks are off
    /// (`WEBHOOKS_ENABLED` unset or false): endpoints cannot be registered and nothing is
    /// delivered, while events are still written and listed.
    pub secrets: Option<secrets::SecretBox>,
    /// Which destinations outbound calls may reach.
    pub policy: outbound::Policy,
    /// How long an event is retried before it is given up and its endpoint marked failing.
    pub retry_window: Duration,
    /// The first and the longest wait between attempts (exponential, with jitter).
    pub retry_first: Duration,
    pub retry_longest: Duration,
    /// Whole-request bound of one delivery, and of its connection.
    pub timeout: Duration,
    pub connect_timeout: Duration,
    /// Deliveries in flight to one endpoint, per API process.
    pub per_endpoint: usize,
    /// Deliveries claimed at once (all endpoints).
    pub batch_size: i64,
    /// How often the dispatcher looks for new events and due retries.
    pub poll_interval: Duration,
    /// How long events and attempts are kept (whether webhooks are enabled or not: events
    /// are written either way).
    pub retention: retention::Retention,
}

impl std::fmt::Debug for WebhookSettings {
    /// Without the key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookSettings")
            .field("enabled", &self.secrets.is_some())
            .field("policy", &self.policy)
            .field("retry_window", &self.retry_window)
            .field("timeout", &self.timeout)
            .field("per_endpoint", &self.per_endpoint)
            .field("retention", &self.retention)
            .finish_non_exhaustive()
    }
}

impl WebhookSettings {
    pub fn from_source(source: &dyn Source) -> Result<Self, ConfigError> {
        let enabled: bool = config::parse_or(source, "WEBHOOKS_ENABLED", false)?;
        let secrets = if enabled {
            let key = config::optional(source, "WEBHOOK_SECRETS_KEY").ok_or_else(|| {
                ConfigError::new(
                    "WEBHOOK_SECRETS_KEY",
                    "webhooks are enabled: set the key that encrypts their signing secrets (32 bytes, base64)",
                )
            })?;
            Some(
                secrets::SecretBox::from_base64(&key)
                    .map_err(|message| ConfigError::new("WEBHOOK_SECRETS_KEY", message))?,
            )
        } else {
            None
        };
        let allowed = config::optional(source, "WEBHOOK_ALLOWED_CIDRS").unwrap_or_default();
        let policy = outbound::Policy {
            allow_http: config::parse_or(source, "WEBHOOK_ALLOW_HTTP", false)?,
            allowed: outbound::parse_cidrs(&allowed)
                .map_err(|message| ConfigError::new("WEBHOOK_ALLOWED_CIDRS", message))?,
        };
        let millis = |name: &str, default: u64| -> Result<Duration, ConfigError> {
            let value: u64 = config::parse_or(source, name, default)?;
            if value == 0 {
                return Err(ConfigError::new(name, "must be greater than zero"));
            }
            Ok(Duration::from_millis(value))
        };
        let retry_first = millis("WEBHOOK_RETRY_FIRST_MS", 5_000)?;
        let retry_longest = millis("WEBHOOK_RETRY_LONGEST_MS", 3_600_000)?;
        if retry_longest < retry_first {
            return Err(ConfigError::new(
                "WEBHOOK_RETRY_LONGEST_MS",
                "must not be below WEBHOOK_RETRY_FIRST_MS",
            ));
        }
        let per_endpoint: usize =
            config::parse_or(source, "WEBHOOK_MAX_IN_FLIGHT_PER_ENDPOINT", 8)?;
        let batch_size: i64 = config::parse_or(source, "WEBHOOK_BATCH_SIZE", 500)?;
        if per_endpoint == 0 || batch_size <= 0 {
            return Err(ConfigError::new(
                if per_endpoint == 0 {
                    "WEBHOOK_MAX_IN_FLIGHT_PER_ENDPOINT"
                } else {
                    "WEBHOOK_BATCH_SIZE"
                },
                "must be greater than zero",
            ));
        }
        let retry_window = Duration::from_secs(config::parse_or(
            source,
            "WEBHOOK_RETRY_WINDOW_SECONDS",
            3 * 24 * 3600,
        )?);
        Ok(Self {
            secrets,
            policy,
            retry_window,
            retention: retention::Retention::from_source(source, retry_window)?,
            retry_first,
            retry_longest,
            timeout: millis("WEBHOOK_TIMEOUT_MS", 10_000)?,
            connect_timeout: millis("WEBHOOK_CONNECT_TIMEOUT_MS", 3_000)?,
            per_endpoint,
            batch_size,
            poll_interval: millis("WEBHOOK_POLL_INTERVAL_MS", 100)?,
        })
    }

    pub fn enabled(&self) -> bool {
        self.secrets.is_some()
    }
}
