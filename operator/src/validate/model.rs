//! The resolved model: a [`Validated`] system, every default filled in, all the builders
//! read (they never see the raw spec).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{PodTemplateSpec, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

use super::error::ValidationError;
use crate::crd::{
    AutoscalingSpec, JwtSpec, PullPolicy, RiskMode, SecurityContextSpec, SecurityMode,
    ServiceMonitorSpec, ServiceType, StorageSpec,
};
use crate::foreign::spec::{CloudNativePgSpec, ClusterOperatorSpec, DeletionPolicy, VolumeSpec};
use crate::names::{Names, Server, Workload};
use crate::observe::SecretData;
use crate::observe::models::ModelStore;

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
        jwt: Option<(JwtSpec, JwtKey)>,
    },
}

/// Where the API finds the key that verifies JWTs.
#[derive(Debug, Clone, PartialEq)]
pub enum JwtKey {
    /// This key of the auth Secret, mounted as a file.
    SecretKey(&'static str),
    /// The identity provider's keys at this URL (`JWT_JWKS_URL`); nothing is mounted.
    Jwks(String),
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
                if let Some((_, JwtKey::SecretKey(key))) = jwt {
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

/// Webhook delivery by the payments API, with defaults resolved (`spec.webhooks.enabled`).
#[derive(Debug, Clone, PartialEq)]
pub struct Webhooks {
    pub retry_window_seconds: i64,
    pub timeout_seconds: i32,
    pub max_in_flight_per_endpoint: i32,
    /// The private networks merchants may be in, host bits cleared.
    pub allowed_cidrs: Vec<ipnet::IpNet>,
    /// TCP ports deliveries may connect to (the NetworkPolicy's egress).
    pub egress_ports: Vec<i32>,
    /// Secret and key of the key encrypting the signing secrets.
    pub key_secret: String,
    pub key: String,
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
    /// The Prometheus Operator `ServiceMonitor`s, when `spec.monitoring.serviceMonitor` is set.
    pub service_monitor: Option<ServiceMonitorSpec>,
    /// Webhook delivery, when `spec.webhooks.enabled`.
    pub webhooks: Option<Webhooks>,
    /// The referenced Secrets' data, hashed into the pod templates that use them.
    pub secrets: SecretData,
    /// How every pod's user and group ids are chosen.
    pub pod_ids: PodIds,
}

/// How the pods' user and group ids are chosen (`spec.securityContext`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PodIds {
    /// Fixed ids: each one given replaces the image's own (the group also owns the volumes
    /// unless `fs_group` is given).
    Fixed {
        user: Option<i64>,
        group: Option<i64>,
        fs_group: Option<i64>,
    },
    /// No ids at all: OpenShift's `restricted-v2` assigns them from the namespace's range.
    PlatformAssigned,
}

impl PodIds {
    pub fn of(spec: &SecurityContextSpec) -> Self {
        match spec.mode {
            SecurityMode::Fixed => Self::Fixed {
                user: spec.run_as_user,
                group: spec.run_as_group,
                fs_group: spec.fs_group,
            },
            SecurityMode::OpenShiftRestricted => Self::PlatformAssigned,
        }
    }
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
    /// The models the pod template mounts: those of `riskEngine.model`, except a refused one,
    /// for which the live template's is kept (see `held_back`). `None` without a model, or
    /// when a refused champion leaves none to serve.
    pub model: Option<Models>,
    /// Set when a model of `riskEngine.model` is refused: why, and what the engine runs
    /// instead. Everything else of the spec is still applied; the status is `Degraded`.
    pub held_back: Option<HeldBack>,
}

/// The risk models the engine serves, each checked as far as the operator can.
#[derive(Debug, Clone, PartialEq)]
pub struct Models {
    /// The champion (`MODEL_DIR`), which decides in `mode: model`.
    pub champion: ServedModel,
    /// The challenger (`SHADOW_MODEL_DIR`), scored in shadow.
    pub shadow: Option<ServedModel>,
    /// The operator's copies of the spec's models that passed the checks, to apply (a model
    /// kept from the live template already has its copy, which is kept from pruning).
    pub copies: Vec<ModelCopy>,
}

/// One risk model as the pod template mounts it.
#[derive(Debug, Clone, PartialEq)]
pub struct ServedModel {
    /// The card's `model_version` (the pod-template annotation).
    pub version: String,
    pub location: ModelLocation,
}

impl ServedModel {
    /// The card's `model_version`.
    pub fn version(&self) -> &str {
        &self.version
    }
}

/// Where the pods read a model from.
#[derive(Debug, Clone, PartialEq)]
pub enum ModelLocation {
    /// Read from a ConfigMap or a Secret and checked like the engine checks it; served from
    /// the operator's immutable copy `name`, of the same kind.
    Copy { store: ModelStore, name: String },
    /// On a PersistentVolumeClaim the operator cannot read: the engine checks that it holds
    /// the version (`MODEL_VERSION`).
    Claim {
        claim_name: String,
        sub_path: Option<String>,
    },
}

/// The operator's immutable copy of a checked model: a ConfigMap or a Secret (as its source)
/// named after its content, holding `files`.
#[derive(Clone, PartialEq)]
pub struct ModelCopy {
    pub store: ModelStore,
    pub name: String,
    pub files: BTreeMap<String, String>,
}

/// The files by name and size only: a model read from a Secret is never printed, wherever a
/// `Validated` system is.
impl std::fmt::Debug for ModelCopy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sizes: BTreeMap<&str, String> = self
            .files
            .iter()
            .map(|(key, value)| (key.as_str(), format!("{} bytes", value.len())))
            .collect();
        f.debug_struct("ModelCopy")
            .field("store", &self.store)
            .field("name", &self.name)
            .field("files", &sizes)
            .finish()
    }
}

/// A refused model of the spec and what the risk engine runs instead.
#[derive(Debug, Clone, PartialEq)]
pub struct HeldBack {
    /// Why (`ModelNotFound`, `ModelInvalid` or `ModelRefused`; with both models refused, the
    /// champion's).
    pub refusal: ValidationError,
    /// Every refusal and what the engine runs instead, for the `Degraded` condition.
    pub message: String,
    pub engine: HeldEngine,
}

/// What the risk engine Deployment is while a model is held back.
#[derive(Debug, Clone, PartialEq)]
pub enum HeldEngine {
    /// Built from the spec, mounting [`RiskEngine::model`] (the last good model in place of
    /// a refused one).
    Models,
    /// No good champion to serve (the first model is refused): the live pod template is
    /// applied unchanged, so the engine keeps running as it did (e.g. in `rules` mode).
    Template(Box<PodTemplateSpec>),
    /// No good champion and no risk engine yet: none is created until a good model is given.
    Absent,
}

/// A server another operator runs, with defaults resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct Operated {
    pub server: Server,
    /// The `Cluster` or `RabbitmqCluster`.
    pub name: String,
    /// The Secret that operator generates with the connection URL, and its key.
    pub secret: String,
    pub key: &'static str,
    pub replicas: i32,
    pub storage: VolumeSpec,
    pub image: Option<String>,
    pub resources: Option<ResourceRequirements>,
    pub deletion_policy: DeletionPolicy,
}

/// Key of the URL in CloudNativePG's application Secret (`postgresql://app:...@<name>-rw...`).
pub const CNPG_URI_KEY: &str = "uri";
/// Key of the URL in the RabbitMQ Cluster Operator's default-user Secret
/// (`amqp://<user>:<password>@<host>:5672/`, no vhost: see [`crate::build::pod`]).
pub const RABBITMQ_URL_KEY: &str = "connection_string";

impl Operated {
    pub fn cloud_native_pg(names: &Names, spec: &CloudNativePgSpec) -> Self {
        Self {
            server: Server::Postgres,
            name: names.operated(Server::Postgres),
            secret: names.operated_secret(Server::Postgres),
            key: CNPG_URI_KEY,
            replicas: spec.instances,
            storage: spec.storage.clone(),
            image: spec.image_name.clone(),
            resources: spec.resources.clone(),
            deletion_policy: spec.deletion_policy,
        }
    }

    pub fn rabbitmq(names: &Names, spec: &ClusterOperatorSpec) -> Self {
        Self {
            server: Server::RabbitMq,
            name: names.operated(Server::RabbitMq),
            secret: names.operated_secret(Server::RabbitMq),
            key: RABBITMQ_URL_KEY,
            replicas: spec.replicas,
            storage: spec.storage.clone(),
            image: spec.image.clone(),
            resources: spec.resources.clone(),
            deletion_policy: spec.deletion_policy,
        }
    }

    /// The Secret and key holding the connection URL.
    pub fn url_source(&self) -> (&str, &str) {
        (&self.secret, self.key)
    }
}

/// A managed server's data, resolved: a PersistentVolumeClaim by default, an emptyDir only
/// when asked for.
///
/// Releases before 0.2.0 defaulted to an emptyDir. A server created then runs on one; turning
/// it into a claim would replace its pod and lose every payment or queued message at the
/// upgrade. So a server whose spec leaves `storage` out and whose Deployment already mounts an
/// emptyDir keeps it ([`Ephemeral::Legacy`]), flagged in the status and by an Event until the
/// user chooses (docs/production.md, "Upgrading from the emptyDir default"). Any other server
/// without `storage` gets the default claim.
/// Size of the default claim (`storage` absent).
pub const DEFAULT_SIZE: &str = "1Gi";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Storage {
    /// A PersistentVolumeClaim of `size` (`class`: the cluster default when `None`).
    Claim { size: String, class: Option<String> },
    /// An emptyDir: the data is lost with the pod.
    Ephemeral(Ephemeral),
}

/// Why a server keeps its data in an emptyDir.
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::IntoStaticStr)]
pub enum Ephemeral {
    /// `storage: {ephemeral: true}`.
    #[strum(serialize = "EphemeralStorage")]
    OptedIn,
    /// No `storage`, and the server already ran on the emptyDir of releases before 0.2.0.
    #[strum(serialize = "LegacyEphemeralStorage")]
    Legacy,
}

impl Ephemeral {
    /// The reason of the `Durable` condition and of the Warning Event.
    pub fn reason(self) -> &'static str {
        self.into()
    }
}

/// `spec`, resolved; `on_empty_dir`: the server's Deployment mounts an emptyDir today.
pub fn resolve(spec: Option<&StorageSpec>, on_empty_dir: bool) -> Storage {
    match spec {
        Some(spec) if spec.ephemeral => Storage::Ephemeral(Ephemeral::OptedIn),
        Some(spec) => Storage::Claim {
            size: spec.size.clone(),
            class: spec.storage_class_name.clone(),
        },
        None if on_empty_dir => Storage::Ephemeral(Ephemeral::Legacy),
        None => Storage::Claim {
            size: DEFAULT_SIZE.into(),
            class: None,
        },
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(ephemeral: bool) -> StorageSpec {
        StorageSpec {
            size: "5Gi".into(),
            storage_class_name: Some("fast".into()),
            ephemeral,
        }
    }

    #[test]
    fn an_explicit_choice_wins_over_what_runs_today() {
        let claim = Storage::Claim {
            size: "5Gi".into(),
            class: Some("fast".into()),
        };
        for on_empty_dir in [false, true] {
            assert_eq!(resolve(Some(&spec(false)), on_empty_dir), claim);
            assert_eq!(
                resolve(Some(&spec(true)), on_empty_dir),
                Storage::Ephemeral(Ephemeral::OptedIn)
            );
        }
        assert_eq!(
            resolve(None, false),
            Storage::Claim {
                size: DEFAULT_SIZE.into(),
                class: None
            }
        );
        assert_eq!(resolve(None, true), Storage::Ephemeral(Ephemeral::Legacy));
    }
}
