//! The `PaymentSystem` custom resource (`paysys.io/v1alpha1`).
//!
//! Every field has a default so that `spec: {}` describes a working system: two payments API
//! replicas, one risk engine on the default rules, and a managed RabbitMQ and PostgreSQL.
//! Validation the API server can do on its own lives in the schema as CEL rules
//! (`x-kubernetes-validations`), so a bad resource is refused at `kubectl apply` time; what
//! needs the cluster (a referenced Secret's keys) is checked by the operator and reported in
//! the status.

// Each `printcolumn(...)` repeats `type_ =`; clippy reads the repeats as duplicated attributes.
#![allow(clippy::duplicated_attributes)]

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use paysys_core::risk_rules::RiskRules;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use crate::foreign::spec::{
    CloudNativePgSpec, ClusterOperatorSpec, DeletionPolicy, VolumeSpec,
};

/// API group, version and kind, used wherever the operator names its own resource.
pub const GROUP: &str = "paysys.io";
pub const VERSION: &str = "v1alpha1";
pub const KIND: &str = "PaymentSystem";

/// The whole payment system: the payments API, the risk engine and their dependencies.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "paysys.io",
    version = "v1alpha1",
    kind = "PaymentSystem",
    plural = "paymentsystems",
    shortname = "ps",
    category = "paysys",
    namespaced,
    status = "PaymentSystemStatus",
    doc = "A complete paysys deployment: payments API, risk engine, RabbitMQ and PostgreSQL.",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "API",
        type_ = "integer",
        description = "Payments API replicas ready",
        json_path = ".status.paymentsApi.readyReplicas"
    ),
    printcolumn(
        name = "Risk",
        type_ = "integer",
        description = "Risk engine replicas ready",
        json_path = ".status.riskEngine.readyReplicas"
    ),
    printcolumn(
        name = "Model",
        type_ = "string",
        description = "Version of the risk model the engine serves",
        json_path = ".status.riskEngine.model.serving"
    ),
    printcolumn(
        name = "Shadow",
        type_ = "string",
        priority = 1,
        description = "Version of the challenger model scored in shadow",
        json_path = ".status.riskEngine.model.shadow"
    ),
    printcolumn(
        name = "Webhooks",
        type_ = "boolean",
        priority = 1,
        description = "Whether the payments API delivers merchant webhooks",
        json_path = ".status.webhooks.enabled"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        priority = 1,
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase", default)]
pub struct PaymentSystemSpec {
    /// Where the service images come from; one tag for all of them.
    pub image: ImageSpec,
    /// The payments REST API.
    pub payments_api: PaymentsApiSpec,
    /// The risk engine that approves or declines payments.
    pub risk_engine: RiskEngineSpec,
    /// The message broker: run by the operator (`managed`), supplied (`external`), or a
    /// `RabbitmqCluster` of the RabbitMQ Cluster Operator (`clusterOperator`).
    pub rabbitmq: RabbitMqSpec,
    /// The PostgreSQL database: run by the operator (`managed`), supplied (`external`), or a
    /// CloudNativePG `Cluster` (`cloudNativePG`).
    pub database: DatabaseSpec,
    /// NetworkPolicies isolating the broker and the database.
    pub network_policy: NetworkPolicySpec,
    /// Prometheus scraping of the services' metrics (`/metrics` of the payments API and of the
    /// risk engine).
    pub monitoring: MonitoringSpec,
    /// A scheduled Parquet export of the payments (`paysys-feed export`, see
    /// docs/data-feed.md); absent means no export.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_feed: Option<DataFeedSpec>,
    /// Users, groups and the platform policy of every pod the operator runs.
    pub security_context: SecurityContextSpec,
    /// Signed webhooks to merchants, delivered by the payments API (docs/webhooks.md). Off
    /// by default.
    pub webhooks: WebhooksSpec,
    /// While true the operator changes nothing of this system (children are left as they are).
    pub paused: bool,
}

impl Default for PaymentSystemSpec {
    fn default() -> Self {
        Self {
            image: ImageSpec::default(),
            payments_api: PaymentsApiSpec::default(),
            risk_engine: RiskEngineSpec::default(),
            rabbitmq: RabbitMqSpec::managed(),
            database: DatabaseSpec::managed(),
            network_policy: NetworkPolicySpec::default(),
            monitoring: MonitoringSpec::default(),
            data_feed: None,
            security_context: SecurityContextSpec::default(),
            webhooks: WebhooksSpec::default(),
            paused: false,
        }
    }
}

/// Service images: `<repository>/payments-api:<tag>` and `<repository>/risk-engine:<tag>`.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct ImageSpec {
    /// Registry and path the service image names are appended to.
    #[schemars(extend("x-kubernetes-validations" = [
        {"rule": "self != ''", "message": "image.repository must not be empty"}
    ]))]
    pub repository: String,
    /// Tag shared by all service images (the paysys version).
    #[schemars(extend("x-kubernetes-validations" = [
        {"rule": "self != ''", "message": "image.tag must not be empty"}
    ]))]
    pub tag: String,
    /// Image pull policy for every container.
    pub pull_policy: PullPolicy,
    /// Names of Secrets (type `kubernetes.io/dockerconfigjson`) used to pull the images.
    pub pull_secrets: Vec<String>,
}

impl Default for ImageSpec {
    fn default() -> Self {
        Self {
            repository: "ghcr.io/paysys".into(),
            tag: env!("CARGO_PKG_VERSION").into(),
            pull_policy: PullPolicy::IfNotPresent,
            pull_secrets: Vec::new(),
        }
    }
}

/// Kubernetes image pull policy.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema, Default)]
pub enum PullPolicy {
    Always,
    #[default]
    IfNotPresent,
    Never,
}

impl PullPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Always => "Always",
            Self::IfNotPresent => "IfNotPresent",
            Self::Never => "Never",
        }
    }
}

/// The payments API Deployment and Service.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct PaymentsApiSpec {
    /// Number of pods; more than one also gets a PodDisruptionBudget. Ignored with
    /// `autoscaling`.
    #[schemars(extend("x-kubernetes-validations" = [
        {"rule": "self >= 0", "message": "paymentsApi.replicas must be >= 0"}
    ]))]
    pub replicas: i32,
    /// A HorizontalPodAutoscaler owns the number of pods instead of `replicas`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<AutoscalingSpec>,
    /// Full image reference overriding `<image.repository>/payments-api:<image.tag>`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// CPU and memory; defaults to requests 100m/128Mi and a 512Mi memory limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// How clients reach the API.
    pub service: ServiceSpec,
    /// Who may call the API. Without a Secret the operator generates one API key.
    pub auth: AuthSpec,
    /// Largest payment amount accepted, in major units, as a decimal string (`MAX_AMOUNT`).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-validations" = [
        {"rule": "self.matches('^[0-9]+(\\\\.[0-9]+)?$') && !self.matches('^[0.]+$')", "message": "paymentsApi.maxAmount must be a positive decimal number such as \"1000000\" or \"999.99\""}
    ]))]
    pub max_amount: Option<String>,
    /// Database connections per pod (`DB_MAX_CONNECTIONS`).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-validations" = [
        {"rule": "self >= 1", "message": "paymentsApi.dbMaxConnections must be >= 1"}
    ]))]
    pub db_max_connections: Option<i32>,
    /// Log filter (`RUST_LOG`), e.g. `info` or `payments_api=debug`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_level: Option<String>,
}

impl Default for PaymentsApiSpec {
    fn default() -> Self {
        Self {
            replicas: 2,
            autoscaling: None,
            image: None,
            resources: None,
            service: ServiceSpec::default(),
            auth: AuthSpec::default(),
            max_amount: None,
            db_max_connections: None,
            log_level: None,
        }
    }
}

/// The payments API's Service.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct ServiceSpec {
    /// Kubernetes Service type.
    #[serde(rename = "type")]
    pub type_: ServiceType,
    /// Port the Service listens on (the pods listen on 5000).
    #[schemars(extend("x-kubernetes-validations" = [
        {"rule": "self >= 1 && self <= 65535", "message": "paymentsApi.service.port must be between 1 and 65535"}
    ]))]
    pub port: i32,
}

impl Default for ServiceSpec {
    fn default() -> Self {
        Self {
            type_: ServiceType::ClusterIP,
            port: 80,
        }
    }
}

/// Kubernetes Service type.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema, Default)]
pub enum ServiceType {
    #[default]
    ClusterIP,
    NodePort,
    LoadBalancer,
}

impl ServiceType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ClusterIP => "ClusterIP",
            Self::NodePort => "NodePort",
            Self::LoadBalancer => "LoadBalancer",
        }
    }
}

/// Authentication of API callers.
///
/// `secretName` names a Secret in the same namespace with any of these keys:
/// `api-keys` (`principal=key` entries, one per line or comma-separated),
/// `jwt-secret` (HS256 shared secret), `jwt-public-key.pem` (RS256/ES256 public key).
/// Without `secretName` the operator generates one API key, once, into the Secret named in
/// `status.apiKeySecret` (key `api-key`), and never rotates it.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase", default)]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "!has(self.jwt) || has(self.secretName)", "message": "auth.jwt needs auth.secretName holding jwt-secret or jwt-public-key.pem"}
]))]
pub struct AuthSpec {
    /// Secret holding `api-keys` and/or the JWT key material.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret_name: Option<String>,
    /// Accept JWT bearer tokens.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jwt: Option<JwtSpec>,
}

/// JWT verification settings; the key comes from the auth Secret, or from the identity
/// provider's JWKS at `jwksUrl`.
///
/// The URL rules are checked here (CEL) because the API refuses the same at start-up and a
/// crash-looping pod is a worse place to learn it; whether the Secret holds the key can only
/// be checked by the operator, which reads the Secret.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "!has(self.jwksUrl) || self.algorithm != 'HS256'", "message": "auth.jwt.jwksUrl needs algorithm RS256 or ES256: an HS256 secret is never published in a JWKS"},
    {"rule": "!has(self.jwksUrl) || self.jwksUrl.startsWith('https://') || self.jwksUrl.matches('^http://(localhost|127[.][0-9.]+|\\\\[::1\\\\])([:/].*)?$')", "message": "auth.jwt.jwksUrl must be an https URL (plain http only to a loopback address)"}
]))]
pub struct JwtSpec {
    /// Signature algorithm: HS256 uses `jwt-secret`, RS256/ES256 use `jwt-public-key.pem` or
    /// the keys at `jwksUrl`. Pinned: a token or a JWKS key of another algorithm is refused.
    pub algorithm: JwtAlgorithm,
    /// The identity provider's OpenID Provider configuration
    /// (`https://idp.example.com/.well-known/openid-configuration`) or JWKS URL. The API
    /// verifies tokens with the keys published there, chosen by `kid`, cached and refreshed
    /// (on expiry and on an unknown `kid`), so the IdP's key rotation needs no restart;
    /// `jwt-public-key.pem` is then not used. RS256 or ES256 only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048))]
    pub jwks_url: Option<String>,
    /// Required `iss` claim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// Required `aud` claim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
}

/// JWT signature algorithms the payments API accepts.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum JwtAlgorithm {
    HS256,
    RS256,
    ES256,
}

impl JwtAlgorithm {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::HS256 => "HS256",
            Self::RS256 => "RS256",
            Self::ES256 => "ES256",
        }
    }
}

/// The risk engine Deployment, its rules and its model.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "!has(self.mode) || self.mode != 'model' || has(self.model)", "message": "riskEngine.mode model needs riskEngine.model"}
]))]
pub struct RiskEngineSpec {
    /// Number of consumer pods; more than one also gets a PodDisruptionBudget. Ignored with
    /// `autoscaling`.
    #[schemars(extend("x-kubernetes-validations" = [
        {"rule": "self >= 0", "message": "riskEngine.replicas must be >= 0"}
    ]))]
    pub replicas: i32,
    /// A HorizontalPodAutoscaler owns the number of pods instead of `replicas`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<AutoscalingSpec>,
    /// Full image reference overriding `<image.repository>/risk-engine:<image.tag>`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// CPU and memory; defaults to requests 100m/64Mi and a 256Mi memory limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// `rules` evaluates `rules`; `model` scores with `model` (the hard rules of `rules` still
    /// decline on their own); `random` approves with `approvalProbability` (testing only).
    pub mode: RiskMode,
    /// Probability of approval in `random` mode.
    #[schemars(extend("x-kubernetes-validations" = [
        {"rule": "self >= 0.0 && self <= 1.0", "message": "riskEngine.approvalProbability must be within [0, 1]"}
    ]))]
    pub approval_probability: f64,
    /// Messages each pod processes concurrently (`RISK_PREFETCH`).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-validations" = [
        {"rule": "self >= 1 && self <= 65535", "message": "riskEngine.prefetch must be between 1 and 65535"}
    ]))]
    pub prefetch: Option<i32>,
    /// Log filter (`RUST_LOG`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_level: Option<String>,
    /// The rule set, rendered into a ConfigMap and read from `RISK_RULES_FILE`.
    pub rules: RiskRules,
    /// The risk model (required with `mode: model`) and an optional challenger scored in
    /// shadow. A model that fails the engine's checks is never rolled out: the system is
    /// `Degraded` and the pods keep the model they run (docs/operator.md, "The risk model").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<RiskModelSpec>,
}

impl Default for RiskEngineSpec {
    fn default() -> Self {
        Self {
            replicas: 1,
            autoscaling: None,
            image: None,
            resources: None,
            mode: RiskMode::Rules,
            approval_probability: 0.7,
            prefetch: None,
            log_level: None,
            rules: RiskRules::default(),
            model: None,
        }
    }
}

/// The CEL rule "exactly one model source".
macro_rules! one_model_source {
    () => {
        "(has(self.configMap) ? 1 : 0) + (has(self.secret) ? 1 : 0) + (has(self.persistentVolumeClaim) ? 1 : 0) == 1"
    };
}

/// The champion model: exactly one of `configMap`, `secret` or `persistentVolumeClaim`, each
/// holding the trainer's `model-card.json` and the model file it names (`model.txt`);
/// `shadow`, of the same shape, is the challenger.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": one_model_source!(), "message": "riskEngine.model: set exactly one of configMap, secret or persistentVolumeClaim"}
]))]
pub struct RiskModelSpec {
    /// A ConfigMap in the same namespace holding keys `model-card.json` and `model.txt`. The
    /// operator checks them and serves an immutable copy named after their content.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map: Option<ConfigMapModel>,
    /// A Secret in the same namespace holding keys `model-card.json` and `model.txt` (a model
    /// that must not be readable by whoever reads ConfigMaps). The operator checks them and
    /// serves an immutable Secret copy named after their content.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<SecretModel>,
    /// A PersistentVolumeClaim holding the model directory; the operator cannot read it, so
    /// `version` says which model it holds and the engine refuses any other.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistent_volume_claim: Option<ClaimModel>,
    /// The challenger: scores every payment beside the champion, never decides.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow: Option<ModelSource>,
}

impl RiskModelSpec {
    /// The champion's source (`None` unless exactly one is set).
    pub fn champion(&self) -> Option<ModelSourceRef<'_>> {
        ModelSourceRef::of(
            &self.config_map,
            &self.secret,
            &self.persistent_volume_claim,
        )
    }
}

/// A challenger model: exactly one of `configMap`, `secret` or `persistentVolumeClaim`.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": one_model_source!(), "message": "riskEngine.model.shadow: set exactly one of configMap, secret or persistentVolumeClaim"}
]))]
pub struct ModelSource {
    /// A ConfigMap in the same namespace holding keys `model-card.json` and `model.txt`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map: Option<ConfigMapModel>,
    /// A Secret in the same namespace holding keys `model-card.json` and `model.txt`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<SecretModel>,
    /// A PersistentVolumeClaim holding the model directory, with the version it holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistent_volume_claim: Option<ClaimModel>,
}

impl ModelSource {
    /// The source (`None` unless exactly one is set).
    pub fn source(&self) -> Option<ModelSourceRef<'_>> {
        ModelSourceRef::of(
            &self.config_map,
            &self.secret,
            &self.persistent_volume_claim,
        )
    }
}

/// Where one model comes from, as set in the spec.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ModelSourceRef<'a> {
    ConfigMap(&'a ConfigMapModel),
    Secret(&'a SecretModel),
    Claim(&'a ClaimModel),
}

impl<'a> ModelSourceRef<'a> {
    fn of(
        config_map: &'a Option<ConfigMapModel>,
        secret: &'a Option<SecretModel>,
        claim: &'a Option<ClaimModel>,
    ) -> Option<Self> {
        match (config_map, secret, claim) {
            (Some(config_map), None, None) => Some(Self::ConfigMap(config_map)),
            (None, Some(secret), None) => Some(Self::Secret(secret)),
            (None, None, Some(claim)) => Some(Self::Claim(claim)),
            _ => None,
        }
    }
}

/// A model in a ConfigMap (a ConfigMap holds at most 1 MiB: a 200-tree, 31-leaf model is
/// about 0.7 MB).
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConfigMapModel {
    /// Name of the ConfigMap, in the same namespace.
    #[schemars(extend("x-kubernetes-validations" = [
        {"rule": "self != ''", "message": "model configMap.name must not be empty"}
    ]))]
    pub name: String,
}

/// A model in a Secret (at most 1 MiB, like a ConfigMap).
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretModel {
    /// Name of the Secret, in the same namespace.
    #[schemars(extend("x-kubernetes-validations" = [
        {"rule": "self != ''", "message": "model secret.name must not be empty"}
    ]))]
    pub name: String,
}

/// A model directory on a PersistentVolumeClaim (mounted read-only).
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClaimModel {
    /// Name of the PersistentVolumeClaim, in the same namespace.
    #[schemars(extend("x-kubernetes-validations" = [
        {"rule": "self != ''", "message": "model persistentVolumeClaim.claimName must not be empty"}
    ]))]
    pub claim_name: String,
    /// The model directory inside the volume; its root when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_path: Option<String>,
    /// The card's `model_version` of the model in that directory. The engine refuses to start
    /// on any other (exit 2), so a new version rolls out only if the volume holds it; changing
    /// it rolls the pods.
    #[schemars(extend("x-kubernetes-validations" = [
        {"rule": "self != ''", "message": "model persistentVolumeClaim.version must not be empty"}
    ]))]
    pub version: String,
}

/// How the risk engine decides.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema, Default)]
#[serde(rename_all = "lowercase")]
pub enum RiskMode {
    #[default]
    Rules,
    Random,
    Model,
}

impl RiskMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Rules => "rules",
            Self::Random => "random",
            Self::Model => "model",
        }
    }
}

/// The PostgreSQL database: exactly one of `managed`, `external` or `cloudNativePG`.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "(has(self.managed) ? 1 : 0) + (has(self.external) ? 1 : 0) + (has(self.cloudNativePG) ? 1 : 0) == 1", "message": "database: set exactly one of managed, external or cloudNativePG"}
]))]
pub struct DatabaseSpec {
    /// The operator runs a single-instance server (for development and small installations).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub managed: Option<ManagedSpec>,
    /// A server run elsewhere (a production cluster, a cloud service).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external: Option<ExternalSpec>,
    /// A highly available cluster run by CloudNativePG (its operator must be installed).
    #[serde(
        default,
        rename = "cloudNativePG",
        skip_serializing_if = "Option::is_none"
    )]
    pub cloud_native_pg: Option<CloudNativePgSpec>,
}

impl DatabaseSpec {
    /// A managed server with every default.
    pub fn managed() -> Self {
        Self {
            managed: Some(ManagedSpec::default()),
            ..Self::default()
        }
    }

    /// How many ways of providing the database are set (exactly one is valid).
    pub fn choices(&self) -> usize {
        usize::from(self.managed.is_some())
            + usize::from(self.external.is_some())
            + usize::from(self.cloud_native_pg.is_some())
    }
}

/// The message broker: exactly one of `managed`, `external` or `clusterOperator`.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "(has(self.managed) ? 1 : 0) + (has(self.external) ? 1 : 0) + (has(self.clusterOperator) ? 1 : 0) == 1", "message": "rabbitmq: set exactly one of managed, external or clusterOperator"}
]))]
pub struct RabbitMqSpec {
    /// The operator runs a single-instance server (for development and small installations).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub managed: Option<ManagedSpec>,
    /// A server run elsewhere (a production cluster, a cloud service).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external: Option<ExternalSpec>,
    /// A clustered broker run by the RabbitMQ Cluster Operator (it must be installed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_operator: Option<ClusterOperatorSpec>,
}

impl RabbitMqSpec {
    /// A managed server with every default.
    pub fn managed() -> Self {
        Self {
            managed: Some(ManagedSpec::default()),
            ..Self::default()
        }
    }

    /// How many ways of providing the broker are set (exactly one is valid).
    pub fn choices(&self) -> usize {
        usize::from(self.managed.is_some())
            + usize::from(self.external.is_some())
            + usize::from(self.cluster_operator.is_some())
    }
}

/// A single-instance server run by the operator.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase", default)]
pub struct ManagedSpec {
    /// Image override (defaults: `postgres:16.6-alpine`, `rabbitmq:3.13.7`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// CPU and memory; defaults to requests 100m/256Mi and a 1Gi memory limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Where the data lives. Absent: a 1Gi PersistentVolumeClaim, except for a server that
    /// already runs on an emptyDir (created before 0.2.0), which keeps it and is flagged
    /// (see docs/production.md, "Upgrading from the emptyDir default").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub storage: Option<StorageSpec>,
}

/// A managed server's data: a PersistentVolumeClaim, or with `ephemeral: true` an emptyDir
/// that is lost whenever the pod is replaced (development only).
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "!self.ephemeral || !has(self.storageClassName)", "message": "storage.ephemeral keeps no volume: remove storage.storageClassName"}
]))]
pub struct StorageSpec {
    /// Requested size, e.g. `10Gi` (ignored when `ephemeral`).
    #[serde(default = "default_storage_size")]
    #[schemars(extend("x-kubernetes-validations" = [
        {"rule": "self.matches('^[0-9]+(\\\\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$')", "message": "storage.size must be a quantity such as 10Gi"}
    ]))]
    pub size: String,
    /// StorageClass; the cluster default when absent. Cannot change once set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-validations" = [
        {"rule": "self == oldSelf", "message": "storage.storageClassName is immutable"}
    ]))]
    pub storage_class_name: Option<String>,
    /// Keep the data in an emptyDir instead: every restart elsewhere, eviction or upgrade of
    /// the pod loses every payment or queued message. For development; the status says so.
    #[serde(default)]
    pub ephemeral: bool,
}

impl StorageSpec {
    /// `storage: {ephemeral: true}`.
    pub fn ephemeral() -> Self {
        Self {
            size: default_storage_size(),
            storage_class_name: None,
            ephemeral: true,
        }
    }
}

fn default_storage_size() -> String {
    "1Gi".into()
}

/// A server the operator does not run: its connection URL is in a Secret.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExternalSpec {
    /// Secret in the same namespace holding the URL (`amqp://`/`amqps://` or `postgres://`).
    #[schemars(extend("x-kubernetes-validations" = [
        {"rule": "self != ''", "message": "external.secretName must not be empty"}
    ]))]
    pub secret_name: String,
    /// Key of the URL within the Secret.
    #[serde(default = "default_url_key")]
    pub key: String,
}

fn default_url_key() -> String {
    "url".into()
}

/// A HorizontalPodAutoscaler (`autoscaling/v2`) on CPU: it owns the Deployment's replica
/// count, which the operator then stops writing.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "self.minReplicas <= self.maxReplicas", "message": "autoscaling.minReplicas must be <= autoscaling.maxReplicas"}
]))]
pub struct AutoscalingSpec {
    /// Fewest pods; more than one also gets a PodDisruptionBudget.
    #[serde(default = "default_min_replicas")]
    #[schemars(extend("x-kubernetes-validations" = [
        {"rule": "self >= 1", "message": "autoscaling.minReplicas must be >= 1"}
    ]))]
    pub min_replicas: i32,
    /// Most pods.
    pub max_replicas: i32,
    /// Average CPU use, in percent of the pods' CPU request, the autoscaler keeps them at.
    #[serde(default = "default_target_cpu")]
    #[schemars(extend("x-kubernetes-validations" = [
        {"rule": "self >= 1 && self <= 100", "message": "autoscaling.targetCPUUtilizationPercentage must be between 1 and 100"}
    ]))]
    #[serde(rename = "targetCPUUtilizationPercentage")]
    pub target_cpu_utilization_percentage: i32,
}

fn default_min_replicas() -> i32 {
    2
}

fn default_target_cpu() -> i32 {
    70
}

/// NetworkPolicies: only the API and the risk engine reach RabbitMQ, only the API reaches
/// PostgreSQL, the API's port is open to every client.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct NetworkPolicySpec {
    /// Turn off on clusters whose CNI does not enforce NetworkPolicies or that manage their own.
    pub enabled: bool,
}

impl Default for NetworkPolicySpec {
    fn default() -> Self {
        Self { enabled: true }
    }
}

/// Who the pods run as. Whatever is set here, every pod the operator runs (payments API, risk
/// engine, data feed, managed RabbitMQ and PostgreSQL) is non-root with the runtime's default
/// seccomp profile, and every container has a read-only root filesystem, no privilege
/// escalation and no capabilities (the `restricted` Pod Security Standard): only the user
/// and group ids differ between clusters.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "!has(self.mode) || self.mode != 'OpenShiftRestricted' || !has(self.runAsUser)", "message": "securityContext: mode OpenShiftRestricted leaves the user to OpenShift: drop securityContext.runAsUser (or set mode Fixed to keep it)"},
    {"rule": "!has(self.mode) || self.mode != 'OpenShiftRestricted' || !has(self.runAsGroup)", "message": "securityContext: mode OpenShiftRestricted leaves the group to OpenShift: drop securityContext.runAsGroup (or set mode Fixed to keep it)"},
    {"rule": "!has(self.mode) || self.mode != 'OpenShiftRestricted' || !has(self.fsGroup)", "message": "securityContext: mode OpenShiftRestricted leaves the fsGroup to OpenShift: drop securityContext.fsGroup (or set mode Fixed to keep it)"}
]))]
pub struct SecurityContextSpec {
    /// `Fixed`: every pod runs as a fixed user and group (its image's own: 65532 for the paysys
    /// services, 70 for PostgreSQL, 999 for RabbitMQ, unless `runAsUser`, `runAsGroup` or
    /// `fsGroup` say otherwise), and its volumes belong to that group. `OpenShiftRestricted`:
    /// no user, group or fsGroup is set, so OpenShift's `restricted-v2` SecurityContextConstraints
    /// assign them from the namespace's range (it refuses pods that fix ids outside it).
    pub mode: SecurityMode,
    /// User id of every pod instead of its image's (mode `Fixed` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-validations" = [
        {"rule": "self >= 1", "message": "securityContext.runAsUser must be >= 1 (pods never run as root)"}
    ]))]
    pub run_as_user: Option<i64>,
    /// Primary group id of every pod instead of its image's (mode `Fixed` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-validations" = [
        {"rule": "self >= 0", "message": "securityContext.runAsGroup must be >= 0"}
    ]))]
    pub run_as_group: Option<i64>,
    /// Group that owns every pod's volumes instead of its image's group (mode `Fixed` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-validations" = [
        {"rule": "self >= 0", "message": "securityContext.fsGroup must be >= 0"}
    ]))]
    pub fs_group: Option<i64>,
}

/// How the pods' user and group ids are chosen: fixed by the operator (`Fixed`), or left to
/// OpenShift's `restricted-v2` SecurityContextConstraints (`OpenShiftRestricted`).
///
/// A mode rather than a boolean: the two are mutually exclusive ways of choosing ids, and
/// another platform's way would be one more value, not a second flag to reconcile with the
/// first (the Kubernetes API conventions' advice on booleans).
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema, Default)]
pub enum SecurityMode {
    #[default]
    Fixed,
    OpenShiftRestricted,
}

/// Key of the webhook secrets key in its Secret, generated or the user's (the default of
/// `webhooks.secretsKeySecret.key`).
pub const WEBHOOKS_KEY: &str = "secrets-key";

/// The shape of a CIDR in the CEL rule: an IPv4 address or an IPv6 one (hex digits, colons,
/// dots), `/`, a prefix length. The operator parses each one strictly too
/// (`validate::checks`): CEL checks the shape only (its CIDR library is not in every server's
/// CEL, nor in the offline evaluator of the tests).
macro_rules! cidr_pattern {
    () => {
        "^(((25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])[.]){3}(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])/([0-9]|[12][0-9]|3[0-2])|[0-9a-fA-F:.]*:[0-9a-fA-F:.]*/([0-9]|[1-9][0-9]|1[01][0-9]|12[0-8]))$"
    };
}

/// The message of the CIDR list's CEL rule, also the operator's own error.
pub const CIDRS_MESSAGE: &str =
    "webhooks.allowedCIDRs must list CIDRs such as 10.20.0.0/16 or fd00:1::/64";

/// Signed webhooks to merchants: the payments API delivers every payment event to the HTTPS
/// endpoints merchants register (docs/webhooks.md). The settings become the API's `WEBHOOK_*`
/// environment. `WEBHOOK_ALLOW_HTTP` is deliberately not here: plain-http deliveries exist
/// for tests on loopback; in a cluster they would send signed payment data unencrypted.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct WebhooksSpec {
    /// Register endpoints and deliver events (`WEBHOOKS_ENABLED`). Also restricts the API
    /// pods' egress (with `networkPolicy.enabled`): DNS, the database, the broker, and
    /// merchants on `egressPorts` at public addresses or in `allowedCIDRs`.
    pub enabled: bool,
    /// How long an event is retried before it is given up and the endpoint marked failing
    /// (`WEBHOOK_RETRY_WINDOW_SECONDS`). At most 30 days.
    #[schemars(extend("x-kubernetes-validations" = [
        {"rule": "self >= 1 && self <= 2592000", "message": "webhooks.retryWindowSeconds must be between 1 and 2592000 (30 days)"}
    ]))]
    pub retry_window_seconds: i64,
    /// Longest one delivery attempt may take; anything slower is a failed attempt
    /// (`WEBHOOK_TIMEOUT_MS`).
    #[schemars(extend("x-kubernetes-validations" = [
        {"rule": "self >= 1 && self <= 120", "message": "webhooks.timeoutSeconds must be between 1 and 120"}
    ]))]
    pub timeout_seconds: i32,
    /// Attempts at once to one endpoint, per API pod (`WEBHOOK_MAX_IN_FLIGHT_PER_ENDPOINT`):
    /// one endpoint's throughput is this divided by its round trip.
    #[schemars(extend("x-kubernetes-validations" = [
        {"rule": "self >= 1 && self <= 256", "message": "webhooks.maxInFlightPerEndpoint must be between 1 and 256"}
    ]))]
    pub max_in_flight_per_endpoint: i32,
    /// Private networks merchants' endpoints may be in (`WEBHOOK_ALLOWED_CIDRS`), e.g. a
    /// partner reached over a VPN. Everything private, loopback, link-local (the cloud
    /// metadata service) or cluster-internal is refused otherwise, by the API and by the
    /// NetworkPolicy.
    #[serde(rename = "allowedCIDRs")]
    #[schemars(length(max = 32), extend(
        "items" = {"type": "string", "maxLength": 64},
        "x-kubernetes-validations" = [
            {"rule": concat!("self.all(cidr, cidr.matches('", cidr_pattern!(), "'))"), "message": CIDRS_MESSAGE}
        ]
    ))]
    pub allowed_cidrs: Vec<String>,
    /// TCP ports the API pods may connect to merchants on (NetworkPolicy egress). An endpoint
    /// on another port is accepted at registration but its deliveries fail (connect timeout).
    #[schemars(length(min = 1, max = 16), extend("x-kubernetes-validations" = [
        {"rule": "self.all(port, port >= 1 && port <= 65535)", "message": "webhooks.egressPorts must be between 1 and 65535"}
    ]))]
    pub egress_ports: Vec<i32>,
    /// The key encrypting the endpoints' signing secrets in the database
    /// (`WEBHOOK_SECRETS_KEY`: 32 bytes, base64). Without it the operator generates one, once,
    /// into the Secret named in `status.webhooks.secretsKeySecret`, and never replaces it.
    /// Losing the key makes every stored signing secret unreadable: back it up with the
    /// database.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secrets_key_secret: Option<WebhooksKeyRef>,
}

impl Default for WebhooksSpec {
    fn default() -> Self {
        Self {
            enabled: false,
            retry_window_seconds: 3 * 24 * 3600,
            timeout_seconds: 10,
            max_in_flight_per_endpoint: 8,
            allowed_cidrs: Vec::new(),
            egress_ports: vec![443],
            secrets_key_secret: None,
        }
    }
}

/// The Secret and key holding the webhook secrets key.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhooksKeyRef {
    /// Name of the Secret, in the same namespace.
    #[schemars(extend("x-kubernetes-validations" = [
        {"rule": "self != ''", "message": "webhooks.secretsKeySecret.secretName must not be empty"}
    ]))]
    pub secret_name: String,
    /// Key within the Secret: 32 bytes in standard base64 (`openssl rand -base64 32`).
    #[serde(default = "default_webhooks_key")]
    pub key: String,
}

fn default_webhooks_key() -> String {
    WEBHOOKS_KEY.into()
}

/// How Prometheus finds the services' metrics.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct MonitoringSpec {
    /// A Prometheus Operator `ServiceMonitor` (`monitoring.coreos.com/v1`) per service; needs
    /// the Prometheus Operator's CRDs (else the system is `Degraded`, `CrdMissing`). Absent
    /// means none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service_monitor: Option<ServiceMonitorSpec>,
}

/// The `ServiceMonitor`s of the payments API and the risk engine.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct ServiceMonitorSpec {
    /// Extra labels on each `ServiceMonitor`: those a Prometheus selects its monitors by
    /// (e.g. `release: kube-prometheus-stack`).
    pub labels: BTreeMap<String, String>,
}

/// The shape of a schedule the CronJob controller accepts: a macro, or five cron fields, each
/// `*`, `?`, a number or a three-letter name, or a range of those, each with an optional
/// `/step`, several separated by commas. Value ranges (minute 0-59, ...) are checked by the
/// operator (`validate::check_schedule`): CEL has no cron library.
macro_rules! schedule_pattern {
    () => {
        "^(@(yearly|annually|monthly|weekly|daily|midnight|hourly)|([*?]|[0-9]{1,2}|[A-Za-z]{3})(-([0-9]{1,2}|[A-Za-z]{3}))?(/[0-9]{1,2})?(,([*?]|[0-9]{1,2}|[A-Za-z]{3})(-([0-9]{1,2}|[A-Za-z]{3}))?(/[0-9]{1,2})?)*( +([*?]|[0-9]{1,2}|[A-Za-z]{3})(-([0-9]{1,2}|[A-Za-z]{3}))?(/[0-9]{1,2})?(,([*?]|[0-9]{1,2}|[A-Za-z]{3})(-([0-9]{1,2}|[A-Za-z]{3}))?(/[0-9]{1,2})?)*){4})$"
    };
}

/// The message of the schedule's CEL rule, also the operator's own error.
pub const SCHEDULE_MESSAGE: &str = "dataFeed.schedule must be five cron fields (minute hour day-of-month month day-of-week, e.g. \"15 * * * *\") or @hourly, @daily, @weekly, @monthly or @yearly";

/// The scheduled export: a CronJob running `paysys-feed export` against the payments API's
/// database, writing day-partitioned Parquet files onto a PersistentVolumeClaim.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct DataFeedSpec {
    /// When to export, in UTC: five cron fields (minute hour day-of-month month day-of-week,
    /// e.g. `15 * * * *`) or a macro (`@hourly`, `@daily`, `@weekly`, `@monthly`, `@yearly`).
    /// Each run exports the days changed since the previous one.
    #[schemars(length(min = 1, max = 100), extend("x-kubernetes-validations" = [
        {"rule": concat!("self.matches('", schedule_pattern!(), "')"), "message": SCHEDULE_MESSAGE}
    ]))]
    pub schedule: String,
    /// Where the files go: a claim the operator creates, or an existing one.
    pub destination: FeedDestination,
    /// The Fernet key encrypting the user ids. Without it the operator generates one, once,
    /// into the Secret named in `status.dataFeed.keySecret` (key `fernet-key`), and never
    /// replaces it: files written with a key stay readable only with that key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_secret: Option<SecretKeyRef>,
    /// Days of files kept, counted back from the day of the export (UTC); older day folders
    /// are deleted by each run. Absent: every day is kept.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-validations" = [
        {"rule": "self >= 1 && self <= 36500", "message": "dataFeed.retentionDays must be between 1 and 36500"}
    ]))]
    pub retention_days: Option<i32>,
    /// No new exports while true (a running one finishes).
    pub suspend: bool,
    /// Full image reference overriding `<image.repository>/paysys-feed:<image.tag>`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// CPU and memory of the export pod; defaults to requests 100m/128Mi and a 512Mi memory
    /// limit (the export streams: its memory does not grow with the table).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
}

impl Default for DataFeedSpec {
    fn default() -> Self {
        Self {
            schedule: default_schedule(),
            destination: FeedDestination::default(),
            key_secret: None,
            retention_days: None,
            suspend: false,
            image: None,
            resources: None,
        }
    }
}

fn default_schedule() -> String {
    "@hourly".into()
}

/// Where the export writes: exactly one of `claim` or `existingClaim`.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "has(self.claim) != has(self.existingClaim)", "message": "dataFeed.destination: set exactly one of claim or existingClaim"},
    {"rule": "!has(self.claim) || !has(self.claim.ephemeral) || !self.claim.ephemeral", "message": "dataFeed.destination.claim cannot be ephemeral: the exported files must outlive each run"}
]))]
pub struct FeedDestination {
    /// A PersistentVolumeClaim the operator creates (`<name>-data-feed-data`, ReadWriteOnce). It
    /// is kept as long as the PaymentSystem, even when the data feed is removed, so exported
    /// files are never deleted by a spec change. `ephemeral` is refused: each run is a new pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claim: Option<StorageSpec>,
    /// The name of an existing PersistentVolumeClaim in the same namespace (never changed or
    /// deleted by the operator).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-validations" = [
        {"rule": "self != ''", "message": "dataFeed.destination.existingClaim must not be empty"}
    ]))]
    pub existing_claim: Option<String>,
}

impl Default for FeedDestination {
    fn default() -> Self {
        Self {
            claim: Some(StorageSpec {
                size: default_storage_size(),
                storage_class_name: None,
                ephemeral: false,
            }),
            existing_claim: None,
        }
    }
}

/// A key of a Secret in the same namespace.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Name of the Secret.
    #[schemars(extend("x-kubernetes-validations" = [
        {"rule": "self != ''", "message": "keySecret.secretName must not be empty"}
    ]))]
    pub secret_name: String,
    /// Key within the Secret.
    #[serde(default = "default_fernet_key")]
    pub key: String,
}

fn default_fernet_key() -> String {
    "fernet-key".into()
}

/// What the operator last saw of the system.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct PaymentSystemStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `Progressing`, `Degraded` and `Durable`, each with its own
    /// `observedGeneration`; at most one of each type (a list keyed by `type`, so server-side
    /// apply merges conditions by type).
    #[serde(default)]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// Replicas of the payments API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payments_api: Option<ComponentStatus>,
    /// Replicas of the risk engine, and the models it serves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub risk_engine: Option<RiskEngineStatus>,
    /// Replicas of the managed RabbitMQ (absent when external).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rabbitmq: Option<ComponentStatus>,
    /// Replicas of the managed PostgreSQL (absent when external).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<ComponentStatus>,
    /// In-cluster URL of the payments API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_url: Option<String>,
    /// Secret holding the generated API key (key `api-key`), when the operator generated one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_secret: Option<String>,
    /// The scheduled export, when `spec.dataFeed` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_feed: Option<DataFeedStatus>,
    /// Whether the payments API delivers webhooks, and where its secrets key is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhooks: Option<WebhooksStatus>,
}

/// The webhooks as last applied.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct WebhooksStatus {
    /// Whether the payments API delivers webhooks (`spec.webhooks.enabled`, as applied).
    pub enabled: bool,
    /// The Secret and key (`<secret>/<key>`) holding the key that encrypts the stored signing
    /// secrets, when enabled: the one to back up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secrets_key_secret: Option<String>,
}

/// The export's CronJob and what it last did.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct DataFeedStatus {
    /// The CronJob running the export.
    pub cron_job: String,
    /// The PersistentVolumeClaim the files are written to.
    pub claim: String,
    /// The Secret and key holding the Fernet key (`<secret>/<key>`).
    pub key_secret: String,
    /// When the last export job was started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_schedule_time: Option<Time>,
    /// When the last export finished successfully.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_successful_time: Option<Time>,
}

/// The risk engine's pods and the models they serve.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct RiskEngineStatus {
    /// Pods the risk engine should run.
    pub desired_replicas: i32,
    /// Pods that are ready.
    pub ready_replicas: i32,
    /// The model versions every risk engine pod runs (absent without `riskEngine.model`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<ModelStatus>,
}

/// The model versions (the cards' `model_version`) of a completed rollout: a version is
/// reported once every pod runs it, and stays reported while a newer one is refused or still
/// rolling out.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct ModelStatus {
    /// The champion, which decides.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serving: Option<String>,
    /// The challenger, scored in shadow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow: Option<String>,
}

/// Desired and ready pods of one component.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct ComponentStatus {
    /// Pods the component should run.
    pub desired_replicas: i32,
    /// Pods that are ready.
    pub ready_replicas: i32,
}
