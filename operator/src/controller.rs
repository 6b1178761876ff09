//! The reconcile loop: validate -> build -> apply -> status, for every `PaymentSystem`.
//!
//! Failures never crash the operator: each becomes a `Degraded` condition, a Warning Event on
//! the resource, a failure metric, and a retry with exponential backoff. A resource that
//! cannot even be parsed is reported the same way and then left alone until it changes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{ApiResource, DynamicObject, PartialObjectMeta, Patch, PatchParams};
use kube::core::error_boundary::{DeserializeGuard, InvalidObject};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{Controller, WatchStreamExt, predicates, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::json;
use tracing::{info, instrument, warn};

use crate::apply::{self, FIELD_MANAGER};
use crate::build::{self, Children, payments_api};
use crate::crd::{PaymentSystem, PaymentSystemStatus};
pub use crate::error::Error;
use crate::foreign;
use crate::metrics::Metrics;
use crate::replicas;
use crate::status::{self, Conditions, Outcome};
use crate::storage::{self, Ephemeral, Storage};
use crate::validate::{self, Auth};
use crate::watch;

/// How often a healthy system is reconciled anyway, to undo drift nobody was told about.
pub const RESYNC: Duration = Duration::from_secs(600);
/// Reconciles running at once. Each holds an API server connection while it runs, and the
/// client keeps every connection it opened idle for 90 s: unbounded, 100 new systems meant
/// 100 connections and ~30 MiB more memory. A reconcile takes well under a second, so 8 at
/// once still reconcile 100 new systems in seconds.
pub const CONCURRENT_RECONCILES: u16 = 8;
const BACKOFF_BASE: Duration = Duration::from_secs(5);
const BACKOFF_MAX: Duration = Duration::from_secs(300);

/// Shared state of every reconcile.
pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    /// Consecutive failures per resource, for exponential backoff.
    failures: Mutex<HashMap<String, u32>>,
}

impl Context {
    pub fn new(client: Client, metrics: Arc<Metrics>, instance: Option<String>) -> Self {
        let reporter = Reporter {
            controller: FIELD_MANAGER.into(),
            instance,
        };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            metrics,
            failures: Mutex::default(),
        }
    }

    /// The delay before retrying `key` after one more failure: 5 s doubling up to 5 min.
    fn next_backoff(&self, key: &str) -> Duration {
        let mut failures = self.failures.lock().expect("not poisoned");
        let count = failures.entry(key.to_owned()).or_insert(0);
        let delay = BACKOFF_BASE.saturating_mul(2u32.saturating_pow(*count));
        *count = count.saturating_add(1);
        delay.min(BACKOFF_MAX)
    }

    fn succeeded(&self, key: &str) {
        self.failures.lock().expect("not poisoned").remove(key);
    }
}

fn key_of(meta: &kube::api::ObjectMeta) -> String {
    format!(
        "{}/{}",
        meta.namespace.as_deref().unwrap_or_default(),
        meta.name.as_deref().unwrap_or_default()
    )
}

/// Reconciles one resource (the entry point the controller calls), in a span naming it, so
/// every log line of the reconcile says which resource it is about.
#[instrument(skip_all, fields(object = %ObjectRef::from_obj(guard.as_ref())))]
pub async fn reconcile(
    guard: Arc<DeserializeGuard<PaymentSystem>>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    let started = Instant::now();
    ctx.metrics.reconciliations.inc();
    let result = match &guard.0 {
        Ok(ps) => reconcile_system(ps, &ctx).await,
        Err(invalid) => report_unparsable(invalid, &ctx).await,
    };
    ctx.metrics
        .duration
        .observe(started.elapsed().as_secs_f64());
    if let Err(error) = &result {
        ctx.metrics.failed(error.reason());
    }
    result
}

/// Retry delay after a failure (the controller's error policy).
pub fn error_policy(
    guard: Arc<DeserializeGuard<PaymentSystem>>,
    error: &Error,
    ctx: Arc<Context>,
) -> Action {
    let delay = ctx.next_backoff(&key_of(guard.meta()));
    warn!(object = %ObjectRef::from_obj(guard.as_ref()), reason = error.reason(), error = %error, retry_in_s = delay.as_secs(), "reconcile failed");
    Action::requeue(delay)
}

async fn reconcile_system(ps: &PaymentSystem, ctx: &Context) -> Result<Action, Error> {
    let key = key_of(&ps.metadata);
    if ps.spec.paused {
        write_status(ctx, ps, &Outcome::Paused).await?;
        info!("paused; nothing changed");
        ctx.succeeded(&key);
        return Ok(Action::await_change());
    }
    match pipeline(ps, ctx).await {
        Ok(()) => {
            ctx.succeeded(&key);
            Ok(Action::requeue(RESYNC))
        }
        Err(error) => {
            report_failure(ps, &error, ctx).await;
            Err(error)
        }
    }
}

/// validate -> build -> apply -> status.
async fn pipeline(ps: &PaymentSystem, ctx: &Context) -> Result<(), Error> {
    let client = &ctx.client;
    // What needs no cluster is checked first, so a bad spec creates nothing.
    validate::check(ps)?;
    let mut secrets = apply::ensure_generated_secrets(client, ps).await?;
    secrets.extend(apply::read_referenced_secrets(client, ps).await?);
    let on_empty_dir = storage::servers_on_empty_dir(client, ps).await?;
    let system = validate::validate_observed(ps, &secrets, &on_empty_dir)?;
    let children = build::build(&system);
    // Before anything is written: a missing CRD leaves the system untouched (CrdMissing).
    foreign::require_crds(client, &system).await?;
    replicas::hand_over(client, &system).await?;
    let applied = children.apply(client, &system.namespace).await?;
    // The generated Secrets still wanted, and those kept for the system's life.
    let keep = validate::kept_for_life(&system.names);
    let keep_secrets: Vec<String> = validate::generated_secrets(ps)
        .into_iter()
        .map(|(_, name)| name)
        .chain(keep.iter().cloned())
        .collect();
    apply::prune(client, &system, &children, &keep_secrets, &keep).await?;
    let api_key_secret = match &system.auth {
        Auth::Generated { secret_name } => Some(secret_name.clone()),
        Auth::User { .. } => None,
    };
    let ephemeral: Vec<(String, Ephemeral)> = system
        .managed_servers()
        .filter_map(|server| match server.storage {
            Storage::Ephemeral(why) => {
                Some((system.names.workload(server.server.component()), why))
            }
            Storage::Claim { .. } => None,
        })
        .collect();
    warn_if_newly_ephemeral(ctx, ps, &ephemeral).await;
    let data_feed = system
        .data_feed
        .as_ref()
        .map(|feed| status::data_feed(feed, applied.cron_jobs.first()));
    let outcome = Outcome::Applied {
        deployments: &applied.deployments,
        operated: &foreign::readiness(&applied.cnpg_clusters, &applied.rabbitmq_clusters),
        ephemeral: &ephemeral,
        api_url: payments_api::in_cluster_url(&system),
        api_key_secret,
        data_feed: data_feed.as_ref(),
    };
    write_status(ctx, ps, &outcome).await
}

/// A Warning Event when a managed server starts keeping its data in an emptyDir, or says so
/// for another reason (the `Durable` condition changes to `False` or changes its reason), so
/// `kubectl get events` shows the risk once per change rather than at every reconcile.
async fn warn_if_newly_ephemeral(
    ctx: &Context,
    ps: &PaymentSystem,
    ephemeral: &[(String, Ephemeral)],
) {
    let Some((why, message)) = crate::storage::warning(ephemeral) else {
        return;
    };
    let previous = ps
        .status
        .iter()
        .flat_map(|status| &status.conditions)
        .find(|condition| condition.type_ == status::DURABLE);
    let told = previous.is_some_and(|condition| {
        condition.status == "False"
            && condition.reason == why.reason()
            && condition.message == status::truncate(&message, status::MAX_MESSAGE)
    });
    if !told {
        warn_event(ctx, &ps.object_ref(&()), why.reason(), &message).await;
    }
}

/// Writes the status `outcome` implies, unless it is already there (no write, no event, no
/// new reconcile).
async fn write_status(
    ctx: &Context,
    ps: &PaymentSystem,
    outcome: &Outcome<'_>,
) -> Result<(), Error> {
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let status = status::compute(ps, outcome, &now);
    if ps.status.as_ref() == Some(&status) {
        return Ok(());
    }
    patch_status(ctx, ps, &status)
        .await
        .map_err(Error::StatusWriteFailed)
}

async fn patch_status(
    ctx: &Context,
    ps: &PaymentSystem,
    status: &PaymentSystemStatus,
) -> Result<(), kube::Error> {
    let api: Api<PaymentSystem> =
        Api::namespaced(ctx.client.clone(), &ps.namespace().unwrap_or_default());
    let body = json!({
        "apiVersion": PaymentSystem::api_version(&()),
        "kind": PaymentSystem::kind(&()),
        "status": status,
    });
    let params = PatchParams::apply(FIELD_MANAGER).force();
    api.patch_status(&ps.name_any(), &params, &Patch::Apply(body))
        .await
        .map(drop)
}

/// Best effort: the failure is also returned to the controller, which retries; a status or
/// event that cannot be written is only logged.
async fn report_failure(ps: &PaymentSystem, error: &Error, ctx: &Context) {
    if let Err(status_error) = write_status(ctx, ps, &Outcome::Failed(error)).await {
        warn!(error = %status_error, "cannot record the failure in the status");
    }
    publish(ctx, &ps.object_ref(&()), error).await;
}

async fn publish(
    ctx: &Context,
    reference: &k8s_openapi::api::core::v1::ObjectReference,
    error: &Error,
) {
    warn_event(ctx, reference, error.reason(), &error.to_string()).await;
}

/// Best effort: a Warning Event `reason` on `reference`.
async fn warn_event(
    ctx: &Context,
    reference: &k8s_openapi::api::core::v1::ObjectReference,
    reason: &str,
    note: &str,
) {
    let event = Event {
        type_: EventType::Warning,
        reason: reason.into(),
        note: Some(status::truncate(note, status::MAX_MESSAGE)),
        action: "Reconcile".into(),
        secondary: None,
    };
    if let Err(event_error) = ctx.recorder.publish(&event, reference).await {
        warn!(error = %event_error, "cannot publish an event");
    }
}

/// A resource the operator cannot parse (e.g. written before a CRD change): a `Degraded`
/// condition through a schema-less merge patch, and an Event. Not retried: only a change to
/// the resource can fix it, and that change triggers a new reconcile.
async fn report_unparsable(invalid: &InvalidObject, ctx: &Context) -> Result<Action, Error> {
    let error = Error::InvalidResource(invalid.error.clone());
    let namespace = invalid.metadata.namespace.clone().unwrap_or_default();
    let name = invalid.metadata.name.clone().unwrap_or_default();
    let resource = ApiResource::erase::<PaymentSystem>(&());
    let api: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), &namespace, &resource);
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let generation = invalid.metadata.generation;
    // The previous status cannot be read either: every transition time is now.
    let conditions = Conditions::unparsable(&error).to_api(&[], generation, &now);
    let patch = json!({"status": {
        "observedGeneration": generation,
        "conditions": conditions,
    }});
    if let Err(status_error) = api
        .patch_status(&name, &PatchParams::default(), &Patch::Merge(patch))
        .await
    {
        warn!(error = %status_error, "cannot record the parse failure in the status");
    }
    let reference = k8s_openapi::api::core::v1::ObjectReference {
        api_version: Some(PaymentSystem::api_version(&()).into()),
        kind: Some(PaymentSystem::kind(&()).into()),
        namespace: Some(namespace),
        name: Some(name),
        uid: invalid.metadata.uid.clone(),
        ..Default::default()
    };
    publish(ctx, &reference, &error).await;
    ctx.metrics.failed(error.reason());
    Ok(Action::await_change())
}

/// Which namespaces the operator watches.
#[derive(Debug, Clone)]
pub enum Scope {
    All,
    Namespace(String),
}

impl Scope {
    pub(crate) fn api<K>(&self, client: &Client) -> Api<K>
    where
        K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>,
    {
        match self {
            Self::All => Api::all(client.clone()),
            Self::Namespace(namespace) => Api::namespaced(client.clone(), namespace),
        }
    }
}

/// Runs the controller until `shutdown` resolves (then finishes the reconciles in flight).
pub async fn run(
    ctx: Arc<Context>,
    scope: Scope,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.client.clone();
    let (reader, writer) = reflector::store::<DeserializeGuard<PaymentSystem>>();
    // Every watch goes through `watch::resilient`: its own short backoff, so they all resume
    // within seconds of an API server restart (see the module).
    // Only spec changes (generation) trigger: the operator's own status writes do not.
    let systems = watch::resilient(
        "PaymentSystem",
        watcher(
            scope.api(&client),
            watcher::Config::default().any_semantic(),
        ),
    )
    .reflect(writer)
    .applied_objects()
    .predicate_filter(predicates::generation, Default::default());
    // Children carry this label; watching only them, and only their metadata, keeps the
    // operator's memory flat.
    let owned = watcher::Config::default()
        .labels("app.kubernetes.io/managed-by=paysys-operator")
        .any_semantic();
    let controller = Controller::for_stream(systems, reader);
    let store = controller.store();
    // Secrets: metadata only (no data in memory), mapped to the systems that use them, so
    // editing a referenced Secret rolls the pods that read it.
    let secrets = watch::resilient(
        "Secret",
        watcher(
            scope.api::<PartialObjectMeta<Secret>>(&client),
            watcher::Config::default().any_semantic(),
        ),
    )
    .touched_objects();
    Children::owns(controller, &scope, &client, owned)
        .watches_stream(secrets, move |secret: PartialObjectMeta<Secret>| {
            systems_using(&store.state(), &secret)
        })
        .with_config(
            kube::runtime::controller::Config::default().concurrency(CONCURRENT_RECONCILES),
        )
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|_| futures::future::ready(()))
        .await;
}

/// The systems reading `secret` (referenced by name, or generated for them).
fn systems_using(
    systems: &[Arc<DeserializeGuard<PaymentSystem>>],
    secret: &PartialObjectMeta<Secret>,
) -> Vec<ObjectRef<DeserializeGuard<PaymentSystem>>> {
    let name = secret.name_any();
    systems
        .iter()
        .filter(|guard| guard.meta().namespace == secret.metadata.namespace)
        .filter(|guard| match &guard.0 {
            Ok(ps) => {
                validate::referenced_secrets(ps).contains(&name)
                    || validate::generated_secrets(ps)
                        .iter()
                        .any(|(_, generated)| *generated == name)
            }
            Err(_) => false,
        })
        .map(|guard| ObjectRef::from_obj(guard.as_ref()))
        .collect()
}
