//! First step of the pipeline: from the raw resource (and the Secrets it references) to a
//! [`Validated`] system every builder can trust.
//!
//! The CRD's CEL rules already refuse most bad specs at admission; they are checked again here
//! because a resource may predate the current CRD, and because some facts (does the referenced
//! Secret hold the key?) can only be known by reading the cluster.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::Resource;
use kube::ResourceExt;

use crate::crd::{
    AutoscalingSpec, DataFeedSpec, ExternalSpec, JwtAlgorithm, JwtSpec, ManagedSpec, PaymentSystem,
    PaymentSystemSpec, PullPolicy, RiskMode, SCHEDULE_MESSAGE, ServiceType, StorageSpec,
};
pub use crate::foreign::Operated;
use crate::names::{
    GeneratedSecret, MAX_FEED_INSTANCE_NAME, MAX_INSTANCE_NAME, Names, Server, Workload,
};
use crate::storage::{self, Storage};

/// Default images of the managed dependencies, pinned so an operator upgrade is the only thing
/// that changes them.
pub const POSTGRES_IMAGE: &str = "postgres:16.6-alpine";
pub const RABBITMQ_IMAGE: &str = "rabbitmq:3.13.7";

/// Keys the operator reads from a user-supplied auth Secret.
pub const AUTH_API_KEYS: &str = "api-keys";
pub const AUTH_JWT_SECRET: &str = "jwt-secret";
pub const AUTH_JWT_PUBLIC_KEY: &str = "jwt-public-key.pem";

/// Keys of the generated API key Secret: the raw key for people, the `principal=key` file for
/// the API (`API_KEYS_FILE`).
pub const GENERATED_API_KEY: &str = "api-key";
pub const GENERATED_API_KEYS_FILE: &str = "api-keys";

/// Key of the Fernet key in the generated data feed Secret (the default key of a user's).
pub const GENERATED_FEED_KEY: &str = "fernet-key";

/// Image name of the export, appended to `image.repository` like the services'.
pub const FEED_IMAGE: &str = "paysys-feed";

/// Key holding the connection URL in a generated credentials Secret.
pub const CREDENTIALS_URL: &str = "url";

/// Data of the Secrets the system references, by name, as read from the cluster.
pub type SecretData = BTreeMap<String, BTreeMap<String, ByteString>>;

/// Why a resource cannot be reconciled; each variant's name is a condition reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, strum::IntoStaticStr)]
pub enum ValidationError {
    #[error("invalid spec: {0}")]
    InvalidSpec(String),
    #[error("Secret {0} not found")]
    SecretNotFound(String),
    #[error("Secret {secret} has no key {key}")]
    SecretKeyMissing { secret: String, key: String },
    #[error("Secret {secret} key {key} {problem}")]
    SecretKeyInvalid {
        secret: String,
        key: String,
        problem: &'static str,
    },
}

impl ValidationError {
    /// CamelCase reason for conditions, Events and the failure metric.
    pub fn reason(&self) -> &'static str {
        self.into()
    }
}

/// Where a service finds a dependency.
#[derive(Debug, Clone, PartialEq)]
pub enum Connection {
    /// Run by the operator; the URL is in the generated credentials Secret.
    Managed(ManagedServer),
    /// Run elsewhere; the URL is in a user's Secret.
    External { secret_name: String, key: String },
    /// Run by another operator (CloudNativePG, RabbitMQ Cluster Operator) from a resource the
    /// operator creates; the URL is in the Secret that operator generates.
    Operated(Operated),
}

impl Connection {
    /// The Secret and key holding the connection URL.
    pub fn url_source(&self) -> (&str, &str) {
        match self {
            Self::Managed(server) => (&server.credentials_secret, CREDENTIALS_URL),
            Self::External { secret_name, key } => (secret_name, key),
            Self::Operated(operated) => operated.url_source(),
        }
    }

    pub fn managed(&self) -> Option<&ManagedServer> {
        match self {
            Self::Managed(server) => Some(server),
            Self::External { .. } | Self::Operated(_) => None,
        }
    }

    pub fn operated(&self) -> Option<&Operated> {
        match self {
            Self::Operated(operated) => Some(operated),
            Self::Managed(_) | Self::External { .. } => None,
        }
    }
}

/// A single-instance server the operator runs, with defaults resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct ManagedServer {
    pub server: Server,
    pub image: String,
    pub resources: ResourceRequirements,
    pub storage: Storage,
    pub credentials_secret: String,
}

/// How API callers authenticate, resolved against the auth Secret's keys.
#[derive(Debug, Clone, PartialEq)]
pub enum Auth {
    /// The operator's generated key in this Secret.
    Generated { secret_name: String },
    /// A user Secret; only the keys present are mounted and wired.
    User {
        secret_name: String,
        api_keys: bool,
        jwt: Option<(JwtSpec, &'static str)>,
    },
}

impl Auth {
    pub fn secret_name(&self) -> &str {
        match self {
            Self::Generated { secret_name } | Self::User { secret_name, .. } => secret_name,
        }
    }

    /// Secret keys mounted into the API pods.
    pub fn mounted_keys(&self) -> Vec<&'static str> {
        match self {
            Self::Generated { .. } => vec![GENERATED_API_KEYS_FILE],
            Self::User { api_keys, jwt, .. } => {
                let mut keys = Vec::new();
                if *api_keys {
                    keys.push(AUTH_API_KEYS);
                }
                if let Some((_, key)) = jwt {
                    keys.push(*key);
                }
                keys
            }
        }
    }
}

/// The scheduled export, with defaults resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct DataFeed {
    pub schedule: String,
    pub image: String,
    pub resources: ResourceRequirements,
    /// The claim the files go to.
    pub claim_name: String,
    /// Set when the operator creates that claim.
    pub created_claim: Option<StorageSpec>,
    /// Secret and key of the Fernet key.
    pub key_secret: String,
    pub key: String,
    pub retention_days: Option<i32>,
    pub suspend: bool,
}

/// A `PaymentSystem` that passed every check, with every default resolved: all the builders
/// read (they never see the raw spec).
#[derive(Debug, Clone, PartialEq)]
pub struct Validated {
    pub names: Names,
    pub namespace: String,
    pub owner: OwnerReference,
    /// `image.tag`: the paysys version, the pods' `app.kubernetes.io/version` label.
    pub version: String,
    pub pull_policy: PullPolicy,
    pub pull_secrets: Vec<String>,
    pub payments_api: PaymentsApi,
    pub risk_engine: RiskEngine,
    pub auth: Auth,
    pub rabbitmq: Connection,
    pub database: Connection,
    /// Whether NetworkPolicies are built.
    pub network_policies: bool,
    /// The scheduled export, when `spec.dataFeed` is set.
    pub data_feed: Option<DataFeed>,
    /// The referenced Secrets' data, hashed into the pod templates that use them.
    pub secrets: SecretData,
}

impl Validated {
    /// The servers the operator runs, RabbitMQ first.
    pub fn managed_servers(&self) -> impl Iterator<Item = &ManagedServer> {
        [&self.rabbitmq, &self.database]
            .into_iter()
            .filter_map(Connection::managed)
    }

    /// The servers other operators run, RabbitMQ first.
    pub fn operated_servers(&self) -> impl Iterator<Item = &Operated> {
        [&self.rabbitmq, &self.database]
            .into_iter()
            .filter_map(Connection::operated)
    }

    /// The autoscaler of a paysys service, if it has one.
    pub fn autoscaling(&self, workload: Workload) -> Option<&AutoscalingSpec> {
        match workload {
            Workload::PaymentsApi => self.payments_api.autoscaling.as_ref(),
            Workload::RiskEngine => self.risk_engine.autoscaling.as_ref(),
        }
    }

    /// The replica count the operator writes into a paysys service's Deployment: none when
    /// its autoscaler owns it.
    pub fn fixed_replicas(&self, workload: Workload) -> Option<i32> {
        if self.autoscaling(workload).is_some() {
            return None;
        }
        Some(match workload {
            Workload::PaymentsApi => self.payments_api.replicas,
            Workload::RiskEngine => self.risk_engine.replicas,
        })
    }

    /// The fewest pods a paysys service runs (while it runs at all): what its disruption
    /// budget protects.
    pub fn min_replicas(&self, workload: Workload) -> i32 {
        match self.autoscaling(workload) {
            Some(autoscaling) => autoscaling.min_replicas,
            None => self.fixed_replicas(workload).unwrap_or(0),
        }
    }
}

/// The payments API, resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct PaymentsApi {
    pub image: String,
    pub resources: ResourceRequirements,
    pub replicas: i32,
    pub autoscaling: Option<AutoscalingSpec>,
    pub service_type: ServiceType,
    pub service_port: i32,
    pub max_amount: Option<String>,
    pub db_max_connections: Option<i32>,
    /// `velocity.windowSeconds` of the risk rules (`VELOCITY_WINDOW_SECONDS`).
    pub velocity_window_seconds: Option<u64>,
    pub log_level: Option<String>,
}

/// The risk engine, resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct RiskEngine {
    pub image: String,
    pub resources: ResourceRequirements,
    pub replicas: i32,
    pub autoscaling: Option<AutoscalingSpec>,
    pub mode: RiskMode,
    pub approval_probability: f64,
    pub prefetch: Option<i32>,
    pub log_level: Option<String>,
    /// The risk rules as rendered into the ConfigMap.
    pub rules_yaml: String,
}

/// Secrets the operator generates for this resource (created once if absent).
pub fn generated_secrets(ps: &PaymentSystem) -> Vec<(GeneratedSecret, String)> {
    let names = Names::new(&ps.name_any());
    let mut generated = Vec::new();
    if ps.spec.payments_api.auth.secret_name.is_none() {
        generated.push(GeneratedSecret::ApiKey);
    }
    if ps.spec.rabbitmq.managed.is_some() {
        generated.push(GeneratedSecret::Credentials(Server::RabbitMq));
    }
    if ps.spec.database.managed.is_some() {
        generated.push(GeneratedSecret::Credentials(Server::Postgres));
    }
    if ps
        .spec
        .data_feed
        .as_ref()
        .is_some_and(|feed| feed.key_secret.is_none())
    {
        generated.push(GeneratedSecret::FeedKey);
    }
    generated
        .into_iter()
        .map(|secret| (secret, names.generated(secret)))
        .collect()
}

/// Children kept as long as the `PaymentSystem` exists once made, even when the spec no longer
/// asks for them: the API key (switching auth back and forth never changes the key clients
/// hold), the data feed's Fernet key (the files written with it stay readable) and the data
/// feed's claim (switching the feed off never deletes the exported files).
pub fn kept_for_life(names: &Names) -> Vec<String> {
    vec![names.api_key(), names.feed_key(), names.feed_claim()]
}

/// Secrets the resource reads but never writes: the user's, and those another operator
/// generates for an operated dependency (absent until that operator has made them).
pub fn referenced_secrets(ps: &PaymentSystem) -> Vec<String> {
    let spec = &ps.spec;
    let names = Names::new(&ps.name_any());
    let operated = [
        spec.rabbitmq
            .cluster_operator
            .as_ref()
            .map(|_| Operated::secret_of(&names, Server::RabbitMq)),
        spec.database
            .cloud_native_pg
            .as_ref()
            .map(|_| Operated::secret_of(&names, Server::Postgres)),
    ];
    let mut names: Vec<String> = [&spec.rabbitmq.external, &spec.database.external]
        .into_iter()
        .flatten()
        .map(|external| external.secret_name.clone())
        .chain(spec.payments_api.auth.secret_name.clone())
        .chain(
            spec.data_feed
                .as_ref()
                .and_then(|feed| feed.key_secret.as_ref())
                .map(|key| key.secret_name.clone()),
        )
        .chain(operated.into_iter().flatten())
        .collect();
    names.sort();
    names.dedup();
    names
}

/// Checks `ps` against itself and the Secrets read from the cluster, for a system none of
/// whose managed servers runs on the emptyDir of releases before 0.2.0.
pub fn validate(ps: &PaymentSystem, secrets: &SecretData) -> Result<Validated, ValidationError> {
    validate_observed(ps, secrets, &[])
}

/// [`validate`], where the managed servers `on_empty_dir` (see
/// [`storage::servers_on_empty_dir`]) keep their emptyDir when the spec sets no storage.
pub fn validate_observed(
    ps: &PaymentSystem,
    secrets: &SecretData,
    on_empty_dir: &[Server],
) -> Result<Validated, ValidationError> {
    let name = ps.name_any();
    check_spec(&name, &ps.spec)?;
    let namespace = ps
        .namespace()
        .ok_or_else(|| invalid("the resource has no namespace"))?;
    let owner = ps
        .controller_owner_ref(&())
        .ok_or_else(|| invalid("the resource has no uid yet"))?;
    let names = Names::new(&name);
    let spec = &ps.spec;
    let rules_yaml = serde_norway::to_string(&spec.risk_engine.rules)
        .map_err(|e| invalid(format!("riskEngine.rules cannot be rendered: {e}")))?;
    let rabbitmq = match &spec.rabbitmq.cluster_operator {
        Some(operated) => Connection::Operated(Operated::rabbitmq(&names, operated)),
        None => connection(
            &names,
            Server::RabbitMq,
            (&spec.rabbitmq.managed, &spec.rabbitmq.external),
            secrets,
            on_empty_dir,
        )?,
    };
    let database = match &spec.database.cloud_native_pg {
        Some(operated) => Connection::Operated(Operated::cloud_native_pg(&names, operated)),
        None => connection(
            &names,
            Server::Postgres,
            (&spec.database.managed, &spec.database.external),
            secrets,
            on_empty_dir,
        )?,
    };
    let auth = auth(&names, spec, secrets)?;
    let data_feed = spec
        .data_feed
        .as_ref()
        .map(|feed| data_feed(&names, spec, feed, secrets))
        .transpose()?;
    let used: SecretData = secrets
        .iter()
        .filter(|(name, _)| {
            [
                auth.secret_name(),
                rabbitmq.url_source().0,
                database.url_source().0,
            ]
            .contains(&name.as_str())
        })
        .map(|(name, data)| (name.clone(), data.clone()))
        .collect();
    let api = &spec.payments_api;
    let risk = &spec.risk_engine;
    let api_resources = api
        .resources
        .clone()
        .unwrap_or_else(|| resources("100m", "128Mi", "512Mi"));
    let risk_resources = risk
        .resources
        .clone()
        .unwrap_or_else(|| resources("100m", "64Mi", "256Mi"));
    for (field, autoscaling, resources) in [
        ("paymentsApi", &api.autoscaling, &api_resources),
        ("riskEngine", &risk.autoscaling, &risk_resources),
    ] {
        if autoscaling.is_some() && !requests_cpu(resources) {
            return Err(invalid(format!(
                "{field}.autoscaling targets CPU use relative to the CPU request, but \
                 {field}.resources requests no cpu"
            )));
        }
    }
    Ok(Validated {
        payments_api: PaymentsApi {
            image: api
                .image
                .clone()
                .unwrap_or_else(|| service_image(spec, Workload::PaymentsApi)),
            resources: api_resources,
            replicas: api.replicas,
            autoscaling: api.autoscaling.clone(),
            service_type: api.service.type_,
            service_port: api.service.port,
            max_amount: api.max_amount.clone(),
            db_max_connections: api.db_max_connections,
            velocity_window_seconds: risk
                .rules
                .velocity
                .as_ref()
                .map(|velocity| velocity.window_seconds),
            log_level: api.log_level.clone(),
        },
        risk_engine: RiskEngine {
            image: risk
                .image
                .clone()
                .unwrap_or_else(|| service_image(spec, Workload::RiskEngine)),
            resources: risk_resources,
            replicas: risk.replicas,
            autoscaling: risk.autoscaling.clone(),
            mode: risk.mode,
            approval_probability: risk.approval_probability,
            prefetch: risk.prefetch,
            log_level: risk.log_level.clone(),
            rules_yaml,
        },
        version: spec.image.tag.clone(),
        pull_policy: spec.image.pull_policy,
        pull_secrets: spec.image.pull_secrets.clone(),
        network_policies: spec.network_policy.enabled,
        names,
        namespace,
        owner,
        auth,
        rabbitmq,
        database,
        data_feed,
        secrets: used,
    })
}

fn invalid(message: impl Into<String>) -> ValidationError {
    ValidationError::InvalidSpec(message.into())
}

/// The checks that need nothing from the cluster.
pub fn check(ps: &PaymentSystem) -> Result<(), ValidationError> {
    check_spec(&ps.name_any(), &ps.spec)
}

/// The rules the CRD's CEL expressions also enforce, plus those CEL cannot express.
fn check_spec(name: &str, spec: &PaymentSystemSpec) -> Result<(), ValidationError> {
    if name.len() > MAX_INSTANCE_NAME {
        return Err(invalid(format!(
            "metadata.name is longer than {MAX_INSTANCE_NAME} characters"
        )));
    }
    for (field, replicas) in [
        ("paymentsApi.replicas", spec.payments_api.replicas),
        ("riskEngine.replicas", spec.risk_engine.replicas),
    ] {
        if replicas < 0 {
            return Err(invalid(format!("{field} must be >= 0")));
        }
    }
    for (field, autoscaling) in [
        ("paymentsApi", &spec.payments_api.autoscaling),
        ("riskEngine", &spec.risk_engine.autoscaling),
    ] {
        let Some(autoscaling) = autoscaling else {
            continue;
        };
        if autoscaling.min_replicas < 1 {
            return Err(invalid(format!(
                "{field}.autoscaling.minReplicas must be >= 1"
            )));
        }
        if autoscaling.min_replicas > autoscaling.max_replicas {
            return Err(invalid(format!(
                "{field}.autoscaling.minReplicas must be <= {field}.autoscaling.maxReplicas"
            )));
        }
        if !(1..=100).contains(&autoscaling.target_cpu_utilization_percentage) {
            return Err(invalid(format!(
                "{field}.autoscaling.targetCPUUtilizationPercentage must be between 1 and 100"
            )));
        }
    }
    for (field, managed) in [
        ("rabbitmq", &spec.rabbitmq.managed),
        ("database", &spec.database.managed),
    ] {
        if let Some(storage) = managed.as_ref().and_then(|m| m.storage.as_ref())
            && storage.ephemeral
            && storage.storage_class_name.is_some()
        {
            return Err(invalid(format!(
                "{field}.managed.storage.ephemeral keeps no volume: remove storageClassName"
            )));
        }
    }
    let probability = spec.risk_engine.approval_probability;
    if !(0.0..=1.0).contains(&probability) {
        return Err(invalid(
            "riskEngine.approvalProbability must be within [0, 1]",
        ));
    }
    if spec.rabbitmq.choices() != 1 {
        return Err(invalid(
            "rabbitmq: set exactly one of managed, external or clusterOperator",
        ));
    }
    if spec.database.choices() != 1 {
        return Err(invalid(
            "database: set exactly one of managed, external or cloudNativePG",
        ));
    }
    if spec.payments_api.auth.jwt.is_some() && spec.payments_api.auth.secret_name.is_none() {
        return Err(invalid(
            "paymentsApi.auth.jwt needs paymentsApi.auth.secretName",
        ));
    }
    if let Some(amount) = &spec.payments_api.max_amount
        && !is_positive_decimal(amount)
    {
        return Err(invalid(
            "paymentsApi.maxAmount must be a positive decimal number",
        ));
    }
    if spec.risk_engine.rules.decline_threshold == 0 {
        return Err(invalid("riskEngine.rules.declineThreshold must be >= 1"));
    }
    if let Some(feed) = &spec.data_feed {
        check_data_feed(name, feed)?;
    }
    Ok(())
}

fn check_data_feed(name: &str, feed: &DataFeedSpec) -> Result<(), ValidationError> {
    if name.len() > MAX_FEED_INSTANCE_NAME {
        return Err(invalid(format!(
            "metadata.name is longer than {MAX_FEED_INSTANCE_NAME} characters, too long for \
             the data feed's CronJob"
        )));
    }
    if !is_schedule(&feed.schedule) {
        return Err(invalid(SCHEDULE_MESSAGE));
    }
    if feed
        .retention_days
        .is_some_and(|days| !(1..=36500).contains(&days))
    {
        return Err(invalid(
            "dataFeed.retentionDays must be between 1 and 36500",
        ));
    }
    let destination = &feed.destination;
    if destination.claim.is_some() == destination.existing_claim.is_some() {
        return Err(invalid(
            "dataFeed.destination: set exactly one of claim or existingClaim",
        ));
    }
    if destination.existing_claim.as_deref() == Some("") {
        return Err(invalid(
            "dataFeed.destination.existingClaim must not be empty",
        ));
    }
    // Each run is a new pod: an emptyDir would lose every export with it.
    if destination
        .claim
        .as_ref()
        .is_some_and(|claim| claim.ephemeral)
    {
        return Err(invalid(
            "dataFeed.destination.claim cannot be ephemeral: the exported files must outlive \
             each run",
        ));
    }
    Ok(())
}

/// A schedule the CronJob controller accepts (the rules of its parser, robfig/cron's standard
/// one): a macro, or five cron fields whose values are within their ranges. The CRD's pattern
/// checks the shape only.
pub fn is_schedule(schedule: &str) -> bool {
    const MACROS: &[&str] = &[
        "@yearly",
        "@annually",
        "@monthly",
        "@weekly",
        "@daily",
        "@midnight",
        "@hourly",
    ];
    const MONTHS: &[&str] = &[
        "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
    ];
    const DAYS: &[&str] = &["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];
    if MACROS.contains(&schedule) {
        return true;
    }
    // (lowest, highest, names numbered from `lowest`)
    let fields: [(u32, u32, &[&str]); 5] = [
        (0, 59, &[]),
        (0, 23, &[]),
        (1, 31, &[]),
        (1, 12, MONTHS),
        (0, 6, DAYS),
    ];
    let parts: Vec<&str> = schedule
        .split(' ')
        .filter(|part| !part.is_empty())
        .collect();
    parts.len() == fields.len()
        && !schedule.starts_with(' ')
        && parts.iter().zip(fields).all(|(part, (low, high, names))| {
            part.split(',')
                .all(|item| is_cron_item(item, low, high, names))
        })
}

fn is_cron_item(item: &str, low: u32, high: u32, names: &[&str]) -> bool {
    let value = |text: &str| -> Option<u32> {
        if let Some(position) = names
            .iter()
            .position(|name| name.eq_ignore_ascii_case(text))
        {
            return Some(low + position as u32);
        }
        let number: u32 = text
            .bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| text.parse().ok())
            .flatten()?;
        (low..=high).contains(&number).then_some(number)
    };
    let (range, step) = match item.split_once('/') {
        Some((range, step)) => (range, Some(step)),
        None => (item, None),
    };
    let step_ok = step.is_none_or(|step| {
        step.bytes().all(|b| b.is_ascii_digit()) && step.parse::<u32>().is_ok_and(|step| step >= 1)
    });
    let range_ok = match range {
        "*" | "?" => true,
        _ => match range.split_once('-') {
            Some((first, last)) => {
                matches!((value(first), value(last)), (Some(a), Some(b)) if a <= b)
            }
            None => value(range).is_some(),
        },
    };
    step_ok && range_ok
}

fn data_feed(
    names: &Names,
    spec: &PaymentSystemSpec,
    feed: &DataFeedSpec,
    secrets: &SecretData,
) -> Result<DataFeed, ValidationError> {
    let (key_secret, key) = match &feed.key_secret {
        Some(reference) => (reference.secret_name.clone(), reference.key.clone()),
        None => (names.feed_key(), GENERATED_FEED_KEY.to_owned()),
    };
    require_key(secrets, &key_secret, &key)?;
    // Checked here so a wrong key is reported now, not by a failed export hours later.
    if !is_fernet_key(&secrets[&key_secret][&key].0) {
        return Err(ValidationError::SecretKeyInvalid {
            secret: key_secret,
            key,
            problem: "is not a Fernet key (32 bytes in url-safe base64, as made by \
                      `paysys-feed keygen`)",
        });
    }
    let (claim_name, created_claim) =
        match (&feed.destination.claim, &feed.destination.existing_claim) {
            (_, Some(existing)) => (existing.clone(), None),
            (Some(storage), None) => (names.feed_claim(), Some(storage.clone())),
            (None, None) => {
                return Err(invalid(
                    "dataFeed.destination: set exactly one of claim or existingClaim",
                ));
            }
        };
    Ok(DataFeed {
        schedule: feed.schedule.clone(),
        image: feed.image.clone().unwrap_or_else(|| {
            let repository = spec.image.repository.trim_end_matches('/');
            format!("{repository}/{FEED_IMAGE}:{}", spec.image.tag)
        }),
        resources: feed
            .resources
            .clone()
            .unwrap_or_else(|| resources("100m", "128Mi", "512Mi")),
        claim_name,
        created_claim,
        key_secret,
        key,
        retention_days: feed.retention_days,
        suspend: feed.suspend,
    })
}

/// 32 bytes in url-safe base64. Surrounding whitespace (the newline `keygen > file` leaves) is
/// allowed: the export trims it too.
fn is_fernet_key(value: &[u8]) -> bool {
    use base64::Engine as _;
    let text = value.trim_ascii();
    base64::engine::general_purpose::URL_SAFE
        .decode(text)
        .is_ok_and(|bytes| bytes.len() == 32)
}

/// `123` or `123.45`, not zero. Checked on the text: an amount never passes through a float.
fn is_positive_decimal(amount: &str) -> bool {
    let digits = |part: &str| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit());
    let well_formed = match amount.split_once('.') {
        Some((whole, fraction)) => digits(whole) && digits(fraction),
        None => digits(amount),
    };
    well_formed && amount.bytes().any(|b| (b'1'..=b'9').contains(&b))
}

/// `resources` requests some CPU (what an autoscaler's utilisation is relative to); `0`,
/// `0m` or `0.0` is no request.
fn requests_cpu(resources: &ResourceRequirements) -> bool {
    resources
        .requests
        .as_ref()
        .and_then(|requests| requests.get("cpu"))
        .is_some_and(|cpu| !cpu.0.trim_start_matches(['0', '.', 'm']).is_empty())
}

fn service_image(spec: &PaymentSystemSpec, workload: Workload) -> String {
    let repository = spec.image.repository.trim_end_matches('/');
    format!(
        "{repository}/{}:{}",
        workload.component().name(),
        spec.image.tag
    )
}

/// Requests of `cpu` and `memory`, and a memory limit (no CPU limit: throttling a payment
/// path hurts latency more than sharing idle CPU costs).
pub fn resources(cpu: &str, memory: &str, memory_limit: &str) -> ResourceRequirements {
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".to_string(), Quantity(cpu.into())),
            ("memory".to_string(), Quantity(memory.into())),
        ])),
        limits: Some(BTreeMap::from([(
            "memory".to_string(),
            Quantity(memory_limit.into()),
        )])),
        ..ResourceRequirements::default()
    }
}

fn connection(
    names: &Names,
    server: Server,
    dependency: (&Option<ManagedSpec>, &Option<ExternalSpec>),
    secrets: &SecretData,
    on_empty_dir: &[Server],
) -> Result<Connection, ValidationError> {
    match dependency {
        (Some(managed), None) => Ok(Connection::Managed(managed_server(
            names,
            server,
            managed,
            on_empty_dir.contains(&server),
        ))),
        (None, Some(external)) => {
            require_key(secrets, &external.secret_name, &external.key)?;
            Ok(Connection::External {
                secret_name: external.secret_name.clone(),
                key: external.key.clone(),
            })
        }
        // Unreachable after `check_spec`, which names the dependency's three ways.
        _ => Err(invalid(format!(
            "{}: set exactly one way to provide it",
            server.component().name()
        ))),
    }
}

fn managed_server(
    names: &Names,
    server: Server,
    managed: &ManagedSpec,
    on_empty_dir: bool,
) -> ManagedServer {
    let default_image = match server {
        Server::RabbitMq => RABBITMQ_IMAGE,
        Server::Postgres => POSTGRES_IMAGE,
    };
    ManagedServer {
        server,
        image: managed
            .image
            .clone()
            .unwrap_or_else(|| default_image.into()),
        resources: managed
            .resources
            .clone()
            .unwrap_or_else(|| resources("100m", "256Mi", "1Gi")),
        storage: storage::resolve(managed.storage.as_ref(), on_empty_dir),
        credentials_secret: names.credentials(server),
    }
}

fn auth(
    names: &Names,
    spec: &PaymentSystemSpec,
    secrets: &SecretData,
) -> Result<Auth, ValidationError> {
    let auth = &spec.payments_api.auth;
    let Some(secret_name) = &auth.secret_name else {
        let secret_name = names.api_key();
        require_key(secrets, &secret_name, GENERATED_API_KEYS_FILE)?;
        return Ok(Auth::Generated { secret_name });
    };
    let data = secrets
        .get(secret_name)
        .ok_or_else(|| ValidationError::SecretNotFound(secret_name.clone()))?;
    let jwt = match &auth.jwt {
        None => None,
        Some(jwt) => {
            let key = match jwt.algorithm {
                JwtAlgorithm::HS256 => AUTH_JWT_SECRET,
                JwtAlgorithm::RS256 | JwtAlgorithm::ES256 => AUTH_JWT_PUBLIC_KEY,
            };
            require_key(secrets, secret_name, key)?;
            Some((jwt.clone(), key))
        }
    };
    let api_keys = data.contains_key(AUTH_API_KEYS);
    if !api_keys && jwt.is_none() {
        return Err(ValidationError::SecretKeyMissing {
            secret: secret_name.clone(),
            key: AUTH_API_KEYS.into(),
        });
    }
    Ok(Auth::User {
        secret_name: secret_name.clone(),
        api_keys,
        jwt,
    })
}

fn require_key(secrets: &SecretData, secret: &str, key: &str) -> Result<(), ValidationError> {
    let data = secrets
        .get(secret)
        .ok_or_else(|| ValidationError::SecretNotFound(secret.into()))?;
    match data.get(key) {
        Some(value) if !value.0.is_empty() => Ok(()),
        _ => Err(ValidationError::SecretKeyMissing {
            secret: secret.into(),
            key: key.into(),
        }),
    }
}
