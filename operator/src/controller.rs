//! The reconcile loop: observe -> validate -> build -> apply -> status, for every
//! `PaymentSystem`, and the watches that trigger it.
//!
//! Failures never crash the operator: each becomes a `Degraded` condition, a Warning Event on
//! the resource, a failure metric, and a retry with exponential backoff. A resource that
//! cannot even be parsed is reported the same way and then left alone until it changes.
//! What the operator did (children created, a rollout finished, the system became ready) is
//! a Normal Event, told once per change of the status.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{ApiResource, DynamicObject, PartialObjectMeta, Patch, PatchParams};
use kube::core::error_boundary::{DeserializeGuard, InvalidObject};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::watcher::ExponentialBackoff;
use kube::runtime::{Controller, WatchStreamExt, predicates, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::json;
use tracing::{info, instrument, warn};

use crate::apply;
use crate::build::each_kind;
use crate::build::kinds::{ChildKind, EachKind};
use crate::build::{self, secrets};
use crate::crd::{PaymentSystem, PaymentSystemStatus};
use crate::foreign::ForeignKind;
use crate::metrics::Metrics;
use crate::names::FIELD_MANAGER;
use crate::observe::models::ModelStore;
use crate::observe::{self, crds};
use crate::status::{self, Conditions, Failure, Outcome};
use crate::validate::{self, Ephemeral, ValidationError};
use crate::watch;

/// Why a reconcile failed: the failed step's error, whose variant name is the reason users
/// see (the `reason` of the `Degraded` condition, of the Warning Event, and the `reason` label
/// of `paysys_operator_reconcile_failures_total`), so an alert or a `kubectl describe` tells a
/// Secret that cannot be read from a Deployment that cannot be applied. The message says which
/// object.
#[derive(Debug, thiserror::Error, strum::IntoStaticStr)]
pub enum Error {
    /// Reading the cluster (or creating a generated Secret) failed, or a needed CRD is absent.
    #[error(transparent)]
    Observe(#[from] observe::Error),
    /// The spec, or a Secret it references, does not allow a working system.
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// Applying or pruning the children failed.
    #[error(transparent)]
    Apply(#[from] apply::Error),
    /// Writing the `PaymentSystem`'s status failed.
    #[error("writing the status: {0}")]
    StatusWriteFailed(#[source] kube::Error),
    /// The resource cannot be parsed (e.g. written before a CRD change).
    #[error("the resource cannot be read: {0}")]
    InvalidResource(String),
}

impl Error {
    /// CamelCase reason for conditions, Events and the failure metric: the name of the
    /// innermost variant.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Observe(error) => error.reason(),
            Self::Invalid(error) => error.reason(),
            Self::Apply(error) => error.reason(),
            other => other.into(),
        }
    }

    /// The failure as the status reports it.
    pub fn failure(&self) -> Failure {
        Failure {
            reason: self.reason(),
            message: self.to_string(),
        }
    }
}

/// How often a healthy system is reconciled anyway, to undo drift nobody was told about.
pub const RESYNC: Duration = Duration::from_secs(600);
/// Reconciles running at once. Each holds an API server connection while it runs, and the
/// client keeps every connection it opened idle for 90 s: unbounded, 100 new systems meant
/// 100 connections and ~30 MiB more memory. A reconcile takes well under a second, so 8 at
/// once still reconcile 100 new systems in seconds.
pub const CONCURRENT_RECONCILES: u16 = 8;
/// First retry after a failure; doubles up to [`RETRY_MAX`].
const RETRY_MIN: Duration = Duration::from_secs(5);
const RETRY_MAX: Duration = Duration::from_secs(300);

/// Shared state of every reconcile.
pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    /// The retry schedule of each failing resource (dropped once it succeeds). The delays
    /// are kube-runtime's `ExponentialBackoff` (backon underneath, like the watches' and the
    /// services' retries); only which resource is at which step is kept here.
    failures: Mutex<HashMap<String, ExponentialBackoff>>,
    /// The status this process last wrote for each resource. Reconciles read the resource
    /// from the watch's cache, which may not have seen that write yet when they follow each
    /// other closely (every child's and pod's change triggers one): against the cached
    /// status, a change already written would be skipped, and a transition already told
    /// (or one in between) missed. A restarted operator starts empty and reads the API's.
    written: Mutex<HashMap<String, PaymentSystemStatus>>,
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
            written: Mutex::default(),
        }
    }

    /// `Action::requeue(after)` for the system `meta` names, noted in the reconcile queue's
    /// ledger (`Metrics::queue`).
    fn requeue(&self, meta: &kube::api::ObjectMeta, after: Duration) -> Action {
        let (namespace, name) = namespace_and_name(meta);
        self.metrics.queue.requeued(namespace, name, after);
        Action::requeue(after)
    }

    /// The delay before retrying `key` after one more failure: 5 s doubling up to 5 min.
    fn next_backoff(&self, key: &str) -> Duration {
        let mut failures = self.failures.lock().expect("not poisoned");
        let schedule = failures
            .entry(key.to_owned())
            .or_insert_with(retry_schedule);
        // The schedule has no end (`without_max_times`); the maximum is a safe fallback.
        schedule.next().unwrap_or(RETRY_MAX)
    }

    fn succeeded(&self, key: &str) {
        self.failures.lock().expect("not poisoned").remove(key);
    }

    /// Drops what this process keeps about a deleted resource (its retry schedule, its last
    /// written status), so that memory follows the systems that exist.
    fn forget(&self, key: &str) {
        self.failures.lock().expect("not poisoned").remove(key);
        self.written.lock().expect("not poisoned").remove(key);
    }
}

/// A new resource's retry schedule after failures.
fn retry_schedule() -> ExponentialBackoff {
    ExponentialBackoff::from(
        backon::ExponentialBuilder::default()
            .with_min_delay(RETRY_MIN)
            .with_max_delay(RETRY_MAX)
            .with_factor(2.0)
            .without_max_times(),
    )
}

fn namespace_and_name(meta: &kube::api::ObjectMeta) -> (&str, &str) {
    (
        meta.namespace.as_deref().unwrap_or_default(),
        meta.name.as_deref().unwrap_or_default(),
    )
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
    let (namespace, name) = namespace_and_name(guard.meta());
    ctx.metrics.queue.started(namespace, name);
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
    ctx.requeue(guard.meta(), delay)
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
        Ok(None) => {
            ctx.succeeded(&key);
            Ok(ctx.requeue(&ps.metadata, RESYNC))
        }
        // Everything else applied, and the status already says what was held back: told and
        // retried like a failure (same reason, Event and metric), without overwriting it.
        Ok(Some(held_back)) => {
            let error = Error::from(held_back);
            publish(ctx, &ps.object_ref(&()), &error).await;
            Err(error)
        }
        Err(error) => {
            report_failure(ps, &error, ctx).await;
            Err(error)
        }
    }
}

/// observe -> validate -> build -> apply -> status. Returns the refusal of a risk model that
/// was held back while everything else was applied (see `validate::HeldBack`).
async fn pipeline(ps: &PaymentSystem, ctx: &Context) -> Result<Option<ValidationError>, Error> {
    let client = &ctx.client;
    // What needs no cluster is checked first, so a bad spec creates nothing.
    validate::check(ps)?;
    let observed =
        observe::observe(client, ps, |generated| secrets::generate(ps, generated)).await?;
    let system = validate::observed(&observed)?;
    let children = build::build(&system);
    // Before anything is written: a missing CRD leaves the system untouched (CrdMissing).
    crds::require_served(client, &children.foreign_crds()).await?;
    let applied = apply::apply(client, &system, &observed.autoscaled, &children).await?;
    // The generated Secrets still wanted, and those kept for the system's life; the model
    // copies the live pod template still mounts.
    let mut keep = validate::kept_for_life(&system.names);
    keep.extend(observed.live_engine.copies.iter().cloned());
    keep.extend(
        observe::secrets::generated_secrets(ps)
            .into_iter()
            .map(|(_, name)| name),
    );
    apply::prune(client, &system, &children, &keep).await?;
    warn_if_newly_ephemeral(ctx, ps, &status::ephemeral(&system)).await;
    let outcome = Outcome::Applied {
        system: &system,
        applied: &applied,
    };
    write_status(ctx, ps, &outcome).await?;
    Ok(system
        .risk_engine
        .held_back
        .map(|held_back| held_back.refusal))
}

/// A Warning Event when a managed server starts keeping its data in an emptyDir, or says so
/// for another reason (the `Durable` condition changes to `False` or changes its reason), so
/// `kubectl get events` shows the risk once per change rather than at every reconcile.
async fn warn_if_newly_ephemeral(
    ctx: &Context,
    ps: &PaymentSystem,
    ephemeral: &[(String, Ephemeral)],
) {
    let Some((why, message)) = status::warning(ephemeral) else {
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
/// new reconcile), then tells what changed as Normal Events (see [`status::notices`]).
async fn write_status(
    ctx: &Context,
    ps: &PaymentSystem,
    outcome: &Outcome<'_>,
) -> Result<(), Error> {
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let status = status::compute(ps, outcome, &now);
    let key = key_of(&ps.metadata);
    let written = ctx.written.lock().expect("not poisoned").get(&key).cloned();
    // Written only when it differs from the API's (as cached) or from this process's last
    // write (the cache may not have seen it); told against the latter when there is one.
    if ps.status.as_ref() == Some(&status) && written.as_ref().is_none_or(|w| *w == status) {
        return Ok(());
    }
    let previous = written.or_else(|| ps.status.clone());
    patch_status(ctx, ps, &status)
        .await
        .map_err(Error::StatusWriteFailed)?;
    ctx.written
        .lock()
        .expect("not poisoned")
        .insert(key, status.clone());
    // After the write: a status that could not be written is recomputed, and told, next time.
    for notice in status::notices(previous.as_ref(), &status, outcome) {
        event(
            ctx,
            &ps.object_ref(&()),
            EventType::Normal,
            notice.reason,
            &notice.note,
        )
        .await;
    }
    let models = |status: Option<&PaymentSystemStatus>| {
        status
            .and_then(|status| status.risk_engine.as_ref())
            .and_then(|risk| risk.model.clone())
            .unwrap_or_default()
    };
    for note in status::models_rolled_out(&models(previous.as_ref()), &models(Some(&status))) {
        event(
            ctx,
            &ps.object_ref(&()),
            EventType::Normal,
            status::MODEL_ROLLED_OUT,
            &note,
        )
        .await;
    }
    Ok(())
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
    if let Err(status_error) = write_status(ctx, ps, &Outcome::Failed(&error.failure())).await {
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
    event(ctx, reference, EventType::Warning, reason, note).await;
}

/// Best effort: an Event of `type_` and `reason` on `reference`.
async fn event(
    ctx: &Context,
    reference: &k8s_openapi::api::core::v1::ObjectReference,
    type_: EventType,
    reason: &str,
    note: &str,
) {
    let event = Event {
        type_,
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
    let conditions = Conditions::unparsable(&error.failure()).to_api(&[], generation, &now);
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
    .inspect_ok({
        let ctx = ctx.clone();
        move |event: &watcher::Event<DeserializeGuard<PaymentSystem>>| {
            if let watcher::Event::Delete(guard) = event {
                ctx.forget(&key_of(guard.meta()));
            }
        }
    })
    .reflect(writer)
    .applied_objects()
    .predicate_filter(predicates::generation, Default::default())
    .inspect_ok({
        let metrics = ctx.metrics.clone();
        move |guard| {
            let (namespace, name) = namespace_and_name(guard.meta());
            metrics.queue.triggered(namespace, name);
        }
    });
    // Children carry this label; watching only them, and only their metadata, keeps the
    // operator's memory flat.
    let owned = watcher::Config::default()
        .labels("app.kubernetes.io/managed-by=paysys-operator")
        .any_semantic();
    let controller = Controller::for_stream(systems, reader);
    let store = controller.store();
    ctx.metrics.watch_systems(store.clone());
    // Secrets: metadata only (no data in memory), mapped to the systems that use them, so
    // editing a referenced Secret rolls the pods that read it and a new model in a Secret is
    // checked and rolled out (the operator's own model copies also come through the
    // children's watch).
    let secrets = watch::resilient(
        "Secret",
        watcher(
            scope.api::<PartialObjectMeta<Secret>>(&client),
            watcher::Config::default().any_semantic(),
        ),
    )
    .touched_objects();
    // ConfigMaps holding risk models: metadata only, mapped to the systems naming them, so a
    // new model in a ConfigMap is checked and rolled out (the operator's own ConfigMaps come
    // through the children's watch).
    let config_maps = watch::resilient(
        "ConfigMap",
        watcher(
            scope.api::<PartialObjectMeta<ConfigMap>>(&client),
            watcher::Config::default().any_semantic(),
        ),
    )
    .touched_objects();
    // The services' pods, metadata only (any change, status included, is a new
    // resourceVersion), mapped to their system by the instance label: a risk engine pod
    // refusing a model on a claim is reported without waiting for the resync.
    let pods = watch::resilient(
        "Pod",
        watcher(scope.api::<PartialObjectMeta<Pod>>(&client), owned.clone()),
    )
    .touched_objects();
    let model_store = store.clone();
    let mut children = ChildWatches {
        controller: Some(controller),
        scope: &scope,
        client: &client,
        config: owned,
        metrics: &ctx.metrics,
    };
    each_kind(&mut children);
    let controller = children
        .controller
        .expect("every watch gives the controller back");
    let metrics = ctx.metrics.clone();
    controller
        .watches_stream(secrets, move |secret: PartialObjectMeta<Secret>| {
            let systems = systems_using(&store.state(), &secret);
            for system in &systems {
                let namespace = system.namespace.as_deref().unwrap_or_default();
                metrics.queue.triggered(namespace, &system.name);
            }
            systems
        })
        .watches_stream(
            config_maps,
            move |config_map: PartialObjectMeta<ConfigMap>| {
                systems_reading_model(&model_store.state(), &config_map)
            },
        )
        .watches_stream(pods, |pod: PartialObjectMeta<Pod>| {
            let instance = pod.labels().get("app.kubernetes.io/instance")?.clone();
            let namespace = pod.namespace()?;
            Some(ObjectRef::new(&instance).within(&namespace))
        })
        .with_config(
            kube::runtime::controller::Config::default().concurrency(CONCURRENT_RECONCILES),
        )
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|_| futures::future::ready(()))
        .await;
}

/// The systems reading `secret` (referenced by name, generated for them, or holding a risk
/// model).
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
                observe::secrets::referenced_secrets(ps).contains(&name)
                    || observe::secrets::generated_secrets(ps)
                        .iter()
                        .any(|(_, generated)| *generated == name)
                    || observe::models::reads_model(ps, ModelStore::Secret, &name)
            }
            Err(_) => false,
        })
        .map(|guard| ObjectRef::from_obj(guard.as_ref()))
        .collect()
}

/// The systems whose risk model (champion or challenger) is in `config_map`.
fn systems_reading_model(
    systems: &[Arc<DeserializeGuard<PaymentSystem>>],
    config_map: &PartialObjectMeta<ConfigMap>,
) -> Vec<ObjectRef<DeserializeGuard<PaymentSystem>>> {
    let name = config_map.name_any();
    systems
        .iter()
        .filter(|guard| guard.meta().namespace == config_map.metadata.namespace)
        .filter(|guard| match &guard.0 {
            Ok(ps) => observe::models::reads_model(ps, ModelStore::ConfigMap, &name),
            Err(_) => false,
        })
        .map(|guard| ObjectRef::from_obj(guard.as_ref()))
        .collect()
}

/// Adds to the controller a watch of each child kind in `scope` with `config`: a change to a
/// child reconciles its owner. Each watch resumes on its own (see [`crate::watch`]).
struct ChildWatches<'a> {
    controller: Option<Controller<DeserializeGuard<PaymentSystem>>>,
    scope: &'a Scope,
    client: &'a Client,
    config: watcher::Config,
    /// Each child's change is a request for its owners' reconcile (`Metrics::queue`).
    metrics: &'a Arc<Metrics>,
}

impl EachKind for ChildWatches<'_> {
    /// A built-in kind: by metadata, as owned (a change reconciles the controlling
    /// `PaymentSystem`).
    fn built_in<K: ChildKind>(&mut self) {
        let controller = self.controller.take().expect("set between kinds");
        let metrics = self.metrics.clone();
        let children = watch::children(
            self.scope.api::<PartialObjectMeta<K>>(self.client),
            &self.config,
        )
        // The owners the controller reconciles for this child (as `owns_stream` finds them).
        .inspect_ok(move |child| {
            let namespace = child.metadata.namespace.as_deref().unwrap_or_default();
            for owner in child.owner_references() {
                let owned_by_a_system =
                    ObjectRef::<DeserializeGuard<PaymentSystem>>::from_owner_ref(
                        Some(namespace),
                        owner,
                        (),
                    );
                if owned_by_a_system.is_some() {
                    metrics.queue.triggered(namespace, &owner.name);
                }
            }
        });
        self.controller = Some(controller.owns_stream(children));
    }

    /// A kind of another operator's CRD: a watch that survives the CRD being absent (it
    /// retries with backoff until the CRD is installed) and maps each object to the
    /// `PaymentSystem` named by its instance label, owned or not.
    fn foreign<K: ChildKind + ForeignKind>(&mut self) {
        let controller = self.controller.take().expect("set between kinds");
        // Like every other watch, through `watch::resilient*`: failures (the CRD absent, an
        // API server restart) stay in this watch's own backoff instead of the controller's
        // shared one, which would stall every other watch with it.
        let kind = match K::kind(&()) {
            std::borrow::Cow::Borrowed(kind) => kind,
            std::borrow::Cow::Owned(_) => "foreign",
        };
        let stream = watch::resilient_optional(
            kind,
            watcher(self.scope.api::<K>(self.client), self.config.clone()),
        )
        .touched_objects();
        let metrics = self.metrics.clone();
        self.controller = Some(controller.watches_stream(stream, move |object: K| {
            let instance = object.labels().get("app.kubernetes.io/instance")?.clone();
            let namespace = object.namespace()?;
            metrics.queue.triggered(&namespace, &instance);
            Some(ObjectRef::new(&instance).within(&namespace))
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deleted system's retry schedule and last written status go with it.
    #[tokio::test]
    async fn a_deleted_system_is_forgotten() {
        let config = kube::Config::new("http://127.0.0.1:9".parse().unwrap());
        let client = Client::try_from(config).unwrap();
        let ctx = Context::new(client, Arc::new(Metrics::default()), None);
        let first = ctx.next_backoff("shop/a");
        assert!(ctx.next_backoff("shop/a") > first, "the schedule grows");
        ctx.next_backoff("shop/b");
        ctx.written
            .lock()
            .unwrap()
            .insert("shop/a".into(), PaymentSystemStatus::default());
        ctx.forget("shop/a");
        assert!(!ctx.written.lock().unwrap().contains_key("shop/a"));
        let failures = ctx.failures.lock().unwrap();
        assert!(!failures.contains_key("shop/a"));
        assert!(failures.contains_key("shop/b"), "only the deleted one goes");
    }

    fn api_error() -> kube::Error {
        kube::Error::Api(
            kube::core::Status::failure("etcd is sad", "InternalError")
                .with_code(500)
                .boxed(),
        )
    }

    /// Each step's error nests into the controller's, and the reason stays the innermost
    /// variant's name (the reasons users and alerts already know).
    #[test]
    fn the_reason_is_the_variant_name() {
        let cases: Vec<(Error, &str)> = vec![
            (
                observe::Error::SecretReadFailed {
                    name: "db".into(),
                    source: api_error(),
                }
                .into(),
                "SecretReadFailed",
            ),
            (
                observe::Error::SecretCreateFailed {
                    name: "db".into(),
                    source: api_error(),
                }
                .into(),
                "SecretCreateFailed",
            ),
            (
                observe::Error::StorageReadFailed {
                    name: "shop-postgresql".into(),
                    source: api_error(),
                }
                .into(),
                "StorageReadFailed",
            ),
            (
                observe::Error::ReplicasHandoverFailed {
                    name: "shop-payments-api".into(),
                    source: api_error(),
                }
                .into(),
                "ReplicasHandoverFailed",
            ),
            (
                observe::Error::CrdMissing {
                    missing: "clusters.postgresql.cnpg.io".into(),
                }
                .into(),
                "CrdMissing",
            ),
            (
                observe::Error::CrdCheckFailed {
                    crd: "clusters.postgresql.cnpg.io".into(),
                    source: api_error(),
                }
                .into(),
                "CrdCheckFailed",
            ),
            (
                ValidationError::SecretNotFound("db".into()).into(),
                "SecretNotFound",
            ),
            (
                apply::Error::ReplicasHandoverFailed {
                    name: "shop-payments-api".into(),
                    source: api_error(),
                }
                .into(),
                "ReplicasHandoverFailed",
            ),
            (
                apply::Error::ApplyFailed {
                    kind: "Deployment",
                    name: "shop-payments-api".into(),
                    source: api_error(),
                }
                .into(),
                "ApplyFailed",
            ),
            (
                apply::Error::PruneFailed {
                    kind: "Service",
                    name: "shop-rabbitmq".into(),
                    source: api_error(),
                }
                .into(),
                "PruneFailed",
            ),
            (Error::StatusWriteFailed(api_error()), "StatusWriteFailed"),
            (Error::InvalidResource("bad".into()), "InvalidResource"),
        ];
        for (error, reason) in cases {
            assert_eq!(error.reason(), reason, "{error}");
            assert_eq!(error.failure().reason, reason);
            // The message is the step's own, not wrapped.
            assert_eq!(error.failure().message, error.to_string());
        }
        let nested = Error::from(apply::Error::ApplyFailed {
            kind: "Deployment",
            name: "shop-payments-api".into(),
            source: api_error(),
        });
        assert!(
            nested
                .to_string()
                .starts_with("applying Deployment shop-payments-api: ")
        );
    }
}
