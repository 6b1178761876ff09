//! First step of the pipeline: every read of the cluster a reconcile needs, before anything
//! is decided.
//!
//! What is read: the Secrets the resource references or the operator generates for it
//! ([`secrets`]), the state of children that decides how the system is resolved or handed
//! over ([`children`]: a managed server still on the emptyDir of releases before 0.2.0, the
//! Deployments whose replicas go to an autoscaler), the risk models' ConfigMaps and Secrets,
//! the models the live risk engine template mounts and the risk engine pods that refused a
//! model ([`models`]), and, once the children are built, whether
//! the CRDs of the foreign kinds among them are served ([`crds`]). The steps after this one
//! decide from what it read; only `apply` writes.
//!
//! One write happens here: a generated Secret (API key, credentials, Fernet key) absent from
//! the cluster is created, once, before validation. Created only when absent and never
//! updated, it is part of the world being observed rather than a child being applied: the
//! pods read the value the cluster holds, whoever created it first.

pub mod children;
pub mod crds;
pub mod models;
pub mod secrets;

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use kube::Client;

use crate::crd::PaymentSystem;
use crate::names::{GeneratedSecret, Server};

/// Data of the Secrets the system references or generates, by name, as read from the cluster.
pub type SecretData = BTreeMap<String, BTreeMap<String, ByteString>>;

/// The files of each model ConfigMap or Secret the spec names, by kind and name (a
/// ConfigMap's `data` and `binaryData` together); absent ones are left out (validation
/// reports them).
pub type ModelFiles = BTreeMap<(models::ModelStore, String), BTreeMap<String, Vec<u8>>>;

/// A risk engine pod that exited refusing its configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct RefusedPod {
    pub name: String,
    /// The pod's model annotations (`models::MODEL_VERSION`, `models::SHADOW_MODEL_VERSION`).
    pub champion: Option<String>,
    pub shadow: Option<String>,
    /// Its termination message (what the engine wrote when it refused).
    pub message: String,
}

/// Why observing the cluster failed. The variant's name is the reason users see.
#[derive(Debug, thiserror::Error, strum::IntoStaticStr)]
pub enum Error {
    /// Reading a Secret (generated or referenced) failed.
    #[error("reading Secret {name}: {source}")]
    SecretReadFailed {
        name: String,
        #[source]
        source: kube::Error,
    },
    /// Creating a generated Secret failed.
    #[error("creating Secret {name}: {source}")]
    SecretCreateFailed {
        name: String,
        #[source]
        source: kube::Error,
    },
    /// Reading a managed server's Deployment, to tell whether it still runs on the emptyDir
    /// of releases before 0.2.0, failed.
    #[error("reading Deployment {name} to find its storage: {source}")]
    StorageReadFailed {
        name: String,
        #[source]
        source: kube::Error,
    },
    /// Reading the Deployment whose replica count is handed over to its
    /// HorizontalPodAutoscaler failed (the same reason as the handover's write, see
    /// `apply::replicas`).
    #[error("handing the replicas of Deployment {name} over to its autoscaler: {source}")]
    ReplicasHandoverFailed {
        name: String,
        #[source]
        source: kube::Error,
    },
    /// Reading a ConfigMap or Secret holding a risk model, or the risk engine Deployment to
    /// see which models it mounts, failed.
    #[error("reading {name} for the risk model: {source}")]
    ModelReadFailed {
        name: String,
        #[source]
        source: kube::Error,
    },
    /// Listing the risk engine's pods, to see whether they refused a model on a claim, failed.
    #[error("listing the risk engine pods ({selector}): {source}")]
    PodReadFailed {
        selector: String,
        #[source]
        source: kube::Error,
    },
    /// A child is of another operator's CRD, which the cluster does not serve. Nothing is
    /// applied; retried with backoff, so installing the operator is enough.
    #[error("not installed: {missing}")]
    CrdMissing {
        /// Each missing CRD, the operator serving it and how to install that operator.
        missing: String,
    },
    /// Asking the API server whether a needed CRD is served failed.
    #[error("checking whether {crd} is installed: {source}")]
    CrdCheckFailed {
        crd: String,
        #[source]
        source: kube::Error,
    },
}

impl Error {
    /// CamelCase reason for conditions, Events and the failure metric: the variant's name.
    pub fn reason(&self) -> &'static str {
        self.into()
    }
}

/// What a reconcile of one resource starts from: the resource and what the cluster holds
/// around it.
#[derive(Debug)]
pub struct Observed<'a> {
    pub resource: &'a PaymentSystem,
    /// Every generated and referenced Secret that exists.
    pub secrets: SecretData,
    /// The managed servers without `storage` whose Deployment mounts an emptyDir.
    pub on_empty_dir: Vec<Server>,
    /// The live Deployments of the autoscaled paysys services (absent ones left out).
    pub autoscaled: Vec<Deployment>,
    /// The files of the ConfigMaps and Secrets holding the risk models (absent ones left out).
    pub model_files: ModelFiles,
    /// The risk engine pods that refused their configuration, when a model is on a claim.
    pub refused_pods: Vec<RefusedPod>,
    /// The models the live risk engine pod template mounts, and their copies (kept from
    /// pruning).
    pub live_engine: models::LiveEngine,
}

/// Reads everything `ps` depends on, creating its generated Secrets when absent (`make` builds
/// one with fresh values).
pub async fn observe<'a>(
    client: &Client,
    ps: &'a PaymentSystem,
    make: impl Fn(GeneratedSecret) -> Secret,
) -> Result<Observed<'a>, Error> {
    let mut secrets = secrets::ensure_generated(client, ps, make).await?;
    secrets.extend(secrets::read_referenced(client, ps).await?);
    let on_empty_dir = children::servers_on_empty_dir(client, ps).await?;
    let autoscaled = children::autoscaled_deployments(client, ps).await?;
    let model_files = models::read_sources(client, ps).await?;
    let refused_pods = models::refused_pods(client, ps).await?;
    let live_engine = models::live_engine(client, ps).await?;
    Ok(Observed {
        resource: ps,
        secrets,
        on_empty_dir,
        autoscaled,
        model_files,
        refused_pods,
        live_engine,
    })
}
