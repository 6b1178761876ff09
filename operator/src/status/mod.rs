//! Last step of the pipeline: what the cluster made of the children, as the resource's
//! status. A successful status is computed only from [`Applied`] children (which only the
//! apply step makes), so it can only describe what was applied.
//!
//! Every outcome sets the same three conditions ([`Conditions`]), each outcome through one
//! small constructor. The status is a pure function of its inputs (and of the previous
//! status, whose transition times are kept while a condition's status holds), so reconciling
//! an unchanged system yields an identical status and no write at all.

use std::borrow::Cow;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::ResourceExt;

use crate::apply::Applied;
use crate::build::payments_api;
use crate::crd::{
    ComponentStatus, DataFeedStatus, ModelStatus, PaymentSystem, PaymentSystemStatus,
    RiskEngineStatus, WebhooksStatus,
};
use crate::foreign::Readiness;
use crate::names::{Component, Names, Server};
use crate::observe::models::{MODEL_VERSION, SHADOW_MODEL_VERSION};
use crate::validate::{Auth, DataFeed, Ephemeral, Models, ServedModel, Storage, Validated};

pub const READY: &str = "Ready";
pub const PROGRESSING: &str = "Progressing";
pub const DEGRADED: &str = "Degraded";
/// Whether every managed server keeps its data on a volume (`False`: an emptyDir, whose data
/// is lost with the pod). Set after each successful apply; kept as it was otherwise.
pub const DURABLE: &str = "Durable";

/// A condition's `status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Truth {
    True,
    False,
    Unknown,
}

impl Truth {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::True => "True",
            Self::False => "False",
            Self::Unknown => "Unknown",
        }
    }
}

/// One condition, without its type and times.
#[derive(Debug, Clone, PartialEq)]
pub struct State {
    pub status: Truth,
    pub reason: Cow<'static, str>,
    pub message: String,
}

impl State {
    fn new(
        status: Truth,
        reason: impl Into<Cow<'static, str>>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            status,
            reason: reason.into(),
            message: message.into(),
        }
    }
}

/// The conditions every `PaymentSystem` carries: is it serving (`Ready`), is a rollout under
/// way (`Progressing`), did the last reconcile fail (`Degraded`).
#[derive(Debug, Clone, PartialEq)]
pub struct Conditions {
    pub ready: State,
    pub progressing: State,
    pub degraded: State,
}

const SUCCEEDED: &str = "the last reconcile succeeded";
/// `Progressing`'s reason once every Deployment runs the current spec.
const ROLLOUT_COMPLETE: &str = "RolloutComplete";

impl Conditions {
    /// Applied, and every Deployment runs the current spec and is ready.
    pub fn rolled_out() -> Self {
        Self {
            ready: State::new(
                Truth::True,
                "AllComponentsReady",
                "every component is ready",
            ),
            progressing: State::new(
                Truth::False,
                ROLLOUT_COMPLETE,
                "every Deployment runs the current spec",
            ),
            degraded: State::new(Truth::False, "ReconcileSucceeded", SUCCEEDED),
        }
    }

    /// Applied; `waiting` (e.g. `shop-payments-api 1/2 ready`) are still rolling out.
    pub fn rolling_out(waiting: &[String]) -> Self {
        let message = format!("waiting for {}", waiting.join(", "));
        Self {
            ready: State::new(Truth::False, "ComponentsNotReady", message.clone()),
            progressing: State::new(Truth::True, "RollingOut", message),
            degraded: State::new(Truth::False, "ReconcileSucceeded", SUCCEEDED),
        }
    }

    /// Applied, but a risk model of the spec was refused (`failure`, its message saying what
    /// the engine runs instead): `Degraded` says so while the rest reports the rollout of what
    /// was applied (`applied`: [`Self::rolled_out`] or [`Self::rolling_out`]). The system
    /// serves, so `Ready` stays as the components are, unless there is no risk engine at all
    /// (`engine_exists`); `Progressing` does not call the generation rolled out.
    pub fn held_back(applied: Self, failure: &Failure, engine_exists: bool) -> Self {
        let Failure { reason, message } = failure;
        let ready = if engine_exists {
            applied.ready
        } else {
            State::new(Truth::False, *reason, message.clone())
        };
        let progressing = if applied.progressing.status == Truth::True {
            applied.progressing
        } else {
            State::new(
                Truth::False,
                *reason,
                "every Deployment runs what was applied; the refused risk model is not rolled out",
            )
        };
        Self {
            ready,
            progressing,
            degraded: State::new(Truth::True, *reason, message.clone()),
        }
    }

    /// `paused: true`: nothing is touched, so whether the system is ready stays as last seen
    /// (`previous_ready`), or unknown.
    pub fn paused(previous_ready: Option<&Condition>) -> Self {
        let message = "spec.paused is true: the operator changes nothing";
        let ready = match previous_ready {
            Some(ready) => State::new(
                truth(&ready.status),
                ready.reason.clone(),
                ready.message.clone(),
            ),
            None => State::new(Truth::Unknown, "Paused", message),
        };
        Self {
            ready,
            progressing: State::new(Truth::False, "Paused", message),
            degraded: State::new(Truth::False, "Paused", message),
        }
    }

    /// The reconcile failed (`failure`) and is retried with backoff.
    pub fn failed(failure: &Failure) -> Self {
        let Failure { reason, message } = failure;
        Self {
            ready: State::new(Truth::False, *reason, message.clone()),
            progressing: State::new(
                Truth::False,
                *reason,
                "the last reconcile failed; retrying with backoff",
            ),
            degraded: State::new(Truth::True, *reason, message.clone()),
        }
    }

    /// The resource cannot be parsed (`failure`); only a change to it can help, so it is not
    /// retried.
    pub fn unparsable(failure: &Failure) -> Self {
        let Failure { reason, message } = failure;
        Self {
            ready: State::new(Truth::False, *reason, message.clone()),
            progressing: State::new(Truth::False, *reason, message.clone()),
            degraded: State::new(Truth::True, *reason, message.clone()),
        }
    }

    /// As API conditions for `generation`; a condition whose status is the same as in
    /// `previous` keeps its transition time, the others get `now`.
    pub fn to_api(
        &self,
        previous: &[Condition],
        generation: Option<i64>,
        now: &Time,
    ) -> Vec<Condition> {
        [
            (READY, &self.ready),
            (PROGRESSING, &self.progressing),
            (DEGRADED, &self.degraded),
        ]
        .into_iter()
        .map(|(type_, state)| state.to_api(type_, previous, generation, now))
        .collect()
    }
}

impl State {
    /// As API condition `type_` for `generation`; keeps the transition time of `previous`'s
    /// condition of that type while its status is the same, else `now`.
    fn to_api(
        &self,
        type_: &str,
        previous: &[Condition],
        generation: Option<i64>,
        now: &Time,
    ) -> Condition {
        let status = self.status.as_str();
        let since = previous
            .iter()
            .find(|old| old.type_ == type_ && old.status == status)
            .map(|old| old.last_transition_time.clone())
            .unwrap_or_else(|| now.clone());
        Condition {
            type_: type_.into(),
            status: status.into(),
            reason: self.reason.to_string(),
            message: truncate(&self.message, MAX_MESSAGE),
            observed_generation: generation,
            last_transition_time: since,
        }
    }
}

fn truth(status: &str) -> Truth {
    match status {
        "True" => Truth::True,
        "False" => Truth::False,
        _ => Truth::Unknown,
    }
}

/// Longest condition message (the API server's limit is 32768 bytes; a long one is noise).
pub const MAX_MESSAGE: usize = 1000;

/// `text` cut to `max` characters, with an ellipsis when cut.
pub fn truncate(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

/// Replicas of a component's Deployment as the API server reports them.
fn component_status(deployment: &Deployment) -> ComponentStatus {
    let status = deployment.status.clone().unwrap_or_default();
    ComponentStatus {
        desired_replicas: deployment.spec.replicas.unwrap_or(1),
        ready_replicas: status.ready_replicas.unwrap_or(0),
    }
}

/// A Deployment has finished rolling out its current spec: the controller saw it, every pod
/// runs the new template and is ready, and no old pod is left.
pub fn rolled_out(deployment: &Deployment) -> bool {
    let desired = deployment.spec.replicas.unwrap_or(1);
    let Some(status) = &deployment.status else {
        return false;
    };
    let seen =
        status.observed_generation.unwrap_or(0) >= deployment.metadata.generation.unwrap_or(0);
    seen && status.updated_replicas.unwrap_or(0) >= desired
        && status.ready_replicas.unwrap_or(0) >= desired
        && status.replicas.unwrap_or(0) <= desired
}

/// The model versions to report: each model of `models` once `deployment` (as applied) has
/// rolled out a pod template started for it, else the version reported before (`previous`):
/// the pods still serve that one. `None` without models.
pub fn model_status(
    previous: Option<&ModelStatus>,
    models: Option<&Models>,
    deployment: &Deployment,
) -> Option<ModelStatus> {
    let models = models?;
    let annotations = deployment
        .spec
        .template
        .metadata
        .as_ref()
        .and_then(|meta| meta.annotations.as_ref());
    let done = rolled_out(deployment);
    let settled = |key: &str, model: Option<&ServedModel>, before: Option<&String>| {
        let wanted = model.map(ServedModel::version);
        let templated = annotations.and_then(|a| a.get(key)).map(String::as_str);
        if done && templated == wanted {
            wanted.map(str::to_owned)
        } else {
            before.cloned()
        }
    };
    Some(ModelStatus {
        serving: settled(
            MODEL_VERSION,
            Some(&models.champion),
            previous.and_then(|p| p.serving.as_ref()),
        ),
        shadow: settled(
            SHADOW_MODEL_VERSION,
            models.shadow.as_ref(),
            previous.and_then(|p| p.shadow.as_ref()),
        ),
    })
}

/// Reason of the Normal Event saying a model version now runs on every risk engine pod.
pub const MODEL_ROLLED_OUT: &str = "ModelRolledOut";

/// The notes of the Events for the model versions `after` reports that `before` did not.
pub fn models_rolled_out(before: &ModelStatus, after: &ModelStatus) -> Vec<String> {
    [
        ("model", &before.serving, &after.serving),
        ("shadow model", &before.shadow, &after.shadow),
    ]
    .into_iter()
    .filter_map(|(role, before, after)| {
        let now = after.as_ref().filter(|now| Some(*now) != before.as_ref())?;
        Some(match before {
            Some(was) => format!("risk engine {role} {now} rolled out (was {was})"),
            None => format!("risk engine {role} {now} rolled out"),
        })
    })
    .collect()
}

/// Why a reconcile failed, as the conditions say it: the failed step's reason (the name of
/// its error's variant) and its message.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    pub reason: &'static str,
    pub message: String,
}

/// The outcome of one reconcile, as the status step sees it.
pub enum Outcome<'a> {
    /// `system`'s children were applied; `applied` is what the API server answered.
    Applied {
        system: &'a Validated,
        applied: &'a Applied,
    },
    /// `paused: true`: nothing was touched.
    Paused,
    /// The reconcile failed.
    Failed(&'a Failure),
}

/// The managed servers of `system` keeping their data in an emptyDir, and why.
pub fn ephemeral(system: &Validated) -> Vec<(String, Ephemeral)> {
    system
        .managed_servers()
        .filter_map(|server| match server.storage {
            Storage::Ephemeral(why) => {
                Some((system.names.workload(server.server.component()), why))
            }
            Storage::Claim { .. } => None,
        })
        .collect()
}

/// What the status says of the managed servers' data: every claim-backed server is durable;
/// the first ephemeral one names the reason, and all of them are listed.
pub fn warning(ephemeral: &[(String, Ephemeral)]) -> Option<(Ephemeral, String)> {
    let (_, first) = ephemeral.first()?;
    let servers: Vec<&str> = ephemeral.iter().map(|(name, _)| name.as_str()).collect();
    let why = match first {
        Ephemeral::OptedIn => "storage.ephemeral is true",
        Ephemeral::Legacy => {
            "no storage is set and the server was created on the emptyDir default of releases \
             before 0.2.0; set storage (after a backup) or storage.ephemeral, see \
             docs/production.md"
        }
    };
    Some((
        *first,
        format!(
            "{} keep their data in an emptyDir: every payment or queued message is lost when \
             the pod is replaced ({why})",
            servers.join(", ")
        ),
    ))
}

/// The data feed's status from its spec and its CronJob as the API server returned it (the
/// CronJob controller records there when a run started and when one last succeeded).
pub fn data_feed(feed: &DataFeed, cron_job: Option<&CronJob>) -> DataFeedStatus {
    let status = cron_job.and_then(|cron_job| cron_job.status.clone());
    DataFeedStatus {
        cron_job: cron_job.map(ResourceExt::name_any).unwrap_or_default(),
        claim: feed.claim_name.clone(),
        key_secret: format!("{}/{}", feed.key_secret, feed.key),
        last_schedule_time: status.as_ref().and_then(|s| s.last_schedule_time.clone()),
        last_successful_time: status.and_then(|s| s.last_successful_time),
    }
}

/// The status `ps` should have after `outcome`, at time `now`.
pub fn compute(ps: &PaymentSystem, outcome: &Outcome<'_>, now: &Time) -> PaymentSystemStatus {
    let previous = ps.status.clone().unwrap_or_default();
    let mut status = PaymentSystemStatus {
        observed_generation: ps.metadata.generation,
        ..previous.clone()
    };
    let conditions = match outcome {
        Outcome::Applied { system, applied } => {
            let children = applied.children();
            let deployments = &children.deployments;
            let operated = &children.readiness();
            let names = Names::new(&ps.name_any());
            let find = |component: Component| {
                deployments
                    .iter()
                    .find(|deployment| deployment.name_any() == names.workload(component))
                    .map(component_status)
            };
            status.payments_api = find(Component::PaymentsApi);
            let risk_engine = deployments
                .iter()
                .find(|deployment| deployment.name_any() == names.workload(Component::RiskEngine));
            status.risk_engine = risk_engine.map(|deployment| {
                let replicas = component_status(deployment);
                RiskEngineStatus {
                    desired_replicas: replicas.desired_replicas,
                    ready_replicas: replicas.ready_replicas,
                    model: match (&system.risk_engine.model, &system.risk_engine.held_back) {
                        // The engine was left as it is: it runs what it ran.
                        (None, Some(_)) => {
                            previous.risk_engine.as_ref().and_then(|r| r.model.clone())
                        }
                        (models, _) => model_status(
                            previous.risk_engine.as_ref().and_then(|r| r.model.as_ref()),
                            models.as_ref(),
                            deployment,
                        ),
                    },
                }
            });
            let operated_status = |server: Server| {
                operated
                    .iter()
                    .find(|readiness| readiness.server == server)
                    .map(|readiness| ComponentStatus {
                        desired_replicas: readiness.desired,
                        ready_replicas: readiness.ready_replicas,
                    })
            };
            status.rabbitmq =
                find(Component::RabbitMq).or_else(|| operated_status(Server::RabbitMq));
            status.database =
                find(Component::Postgres).or_else(|| operated_status(Server::Postgres));
            status.api_url = Some(payments_api::in_cluster_url(system));
            status.api_key_secret = match &system.auth {
                Auth::Generated { secret_name } => Some(secret_name.clone()),
                Auth::User { .. } => None,
            };
            status.data_feed = system
                .data_feed
                .as_ref()
                .map(|feed| data_feed(feed, children.cron_jobs.first()));
            status.webhooks = Some(WebhooksStatus {
                enabled: system.webhooks.is_some(),
                secrets_key_secret: system
                    .webhooks
                    .as_ref()
                    .map(|webhooks| format!("{}/{}", webhooks.key_secret, webhooks.key)),
            });
            let conditions = rolled_out_or_waiting(deployments, operated);
            match &system.risk_engine.held_back {
                Some(held_back) => Conditions::held_back(
                    conditions,
                    &Failure {
                        reason: held_back.refusal.reason(),
                        message: held_back.message.clone(),
                    },
                    risk_engine.is_some(),
                ),
                None => conditions,
            }
        }
        Outcome::Paused => Conditions::paused(
            previous
                .conditions
                .iter()
                .find(|condition| condition.type_ == READY),
        ),
        Outcome::Failed(error) => Conditions::failed(error),
    };
    status.conditions = conditions.to_api(&previous.conditions, ps.metadata.generation, now);
    let durable = match outcome {
        Outcome::Applied { system, applied } => Some(
            durable(&ephemeral(system), &applied.children().readiness()).to_api(
                DURABLE,
                &previous.conditions,
                ps.metadata.generation,
                now,
            ),
        ),
        _ => previous
            .conditions
            .iter()
            .find(|condition| condition.type_ == DURABLE)
            .cloned(),
    };
    status.conditions.extend(durable);
    status
}

/// The `Durable` condition of a system whose `ephemeral` managed servers keep data in an
/// emptyDir. The `operated` clusters never do: CloudNativePG and the RabbitMQ Cluster Operator
/// always give each instance a PersistentVolumeClaim (paysys offers them no emptyDir), so they
/// count as durable and are named as such.
pub fn durable(ephemeral: &[(String, Ephemeral)], operated: &[Readiness]) -> State {
    if let Some((why, message)) = warning(ephemeral) {
        return State::new(Truth::False, why.reason(), message);
    }
    let managed =
        "every managed server keeps its data on a PersistentVolumeClaim (or none is managed)";
    if operated.is_empty() {
        return State::new(Truth::True, "PersistentStorage", managed);
    }
    let objects: Vec<&str> = operated
        .iter()
        .map(|readiness| readiness.object.as_str())
        .collect();
    State::new(
        Truth::True,
        "PersistentStorage",
        format!(
            "{managed}; {} keep theirs on the PersistentVolumeClaims of their operators",
            objects.join(", ")
        ),
    )
}

/// What the operator did, told as a Normal Event (beside the Warning Events of failures).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    /// The Event's reason: `Created`, `RolledOut` or `Ready`.
    pub reason: &'static str,
    pub note: String,
}

/// The Normal Events the status change from `previous` to `next` (after `outcome`) tells:
/// the children created (the first successful apply: `apiUrl` appears), a rollout finished
/// (`Progressing` turns to `RolloutComplete`), the system became ready (`Ready` turns
/// `True`). Each is a change of the status, so a reconcile that changes nothing tells
/// nothing, and a rollout or recovery is told once.
pub fn notices(
    previous: Option<&PaymentSystemStatus>,
    next: &PaymentSystemStatus,
    outcome: &Outcome<'_>,
) -> Vec<Notice> {
    let find = |status: Option<&PaymentSystemStatus>, type_: &str| -> Option<Condition> {
        status?
            .conditions
            .iter()
            .find(|condition| condition.type_ == type_)
            .cloned()
    };
    let mut notices = Vec::new();
    let was_applied = previous.is_some_and(|status| status.api_url.is_some());
    if let (false, Outcome::Applied { applied, .. }) = (was_applied, outcome) {
        notices.push(Notice {
            reason: "Created",
            note: format!("created {}", count_by_kind(applied)),
        });
    }
    let rolled_out = |condition: Option<Condition>| {
        condition.is_some_and(|c| c.status == Truth::False.as_str() && c.reason == ROLLOUT_COMPLETE)
    };
    if rolled_out(find(Some(next), PROGRESSING)) && !rolled_out(find(previous, PROGRESSING)) {
        let generation = next.observed_generation.unwrap_or_default();
        notices.push(Notice {
            reason: "RolledOut",
            note: format!(
                "generation {generation} rolled out: every Deployment runs the current spec"
            ),
        });
    }
    let ready =
        |condition: Option<Condition>| condition.is_some_and(|c| c.status == Truth::True.as_str());
    if ready(find(Some(next), READY)) && !ready(find(previous, READY)) {
        notices.push(Notice {
            reason: "Ready",
            note: "every component is ready".into(),
        });
    }
    notices
}

/// `12 objects (1 ConfigMap, 4 Deployment, ...)`, kinds in apply order.
fn count_by_kind(applied: &Applied) -> String {
    let mut counts: Vec<(String, usize)> = Vec::new();
    let metas = applied.children().metas();
    for (kind, _) in &metas {
        match counts.iter_mut().find(|(seen, _)| seen == kind) {
            Some((_, count)) => *count += 1,
            None => counts.push((kind.to_string(), 1)),
        }
    }
    let kinds: Vec<String> = counts
        .iter()
        .map(|(kind, count)| format!("{count} {kind}"))
        .collect();
    format!("{} objects ({})", metas.len(), kinds.join(", "))
}

/// The conditions after a successful apply: rolled out, or still waiting for some.
fn rolled_out_or_waiting(deployments: &[Deployment], operated: &[Readiness]) -> Conditions {
    let waiting: Vec<String> = deployments
        .iter()
        .filter(|deployment| !rolled_out(deployment))
        .map(|deployment| {
            let replicas = component_status(deployment);
            format!(
                "{} {}/{} ready",
                deployment.name_any(),
                replicas.ready_replicas,
                replicas.desired_replicas
            )
        })
        .chain(
            operated
                .iter()
                .filter(|readiness| !readiness.ready)
                .map(|readiness| format!("{} ({})", readiness.object, readiness.detail)),
        )
        .collect();
    if waiting.is_empty() {
        Conditions::rolled_out()
    } else {
        Conditions::rolling_out(&waiting)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn time(seconds: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(seconds).unwrap())
    }

    fn find<'a>(conditions: &'a [Condition], type_: &str) -> &'a Condition {
        conditions.iter().find(|c| c.type_ == type_).unwrap()
    }

    #[test]
    fn transition_time_moves_only_with_the_status() {
        let first = Conditions::rolling_out(&["shop-payments-api 0/2 ready".into()]).to_api(
            &[],
            Some(1),
            &time(10),
        );
        let second = Conditions::rolled_out().to_api(&first, Some(2), &time(20));
        // Ready: False -> True moves; Degraded stays False and keeps its time.
        assert_eq!(find(&second, READY).last_transition_time, time(20));
        assert_eq!(find(&second, DEGRADED).last_transition_time, time(10));
        assert_eq!(find(&second, PROGRESSING).last_transition_time, time(20));
        assert!(second.iter().all(|c| c.observed_generation == Some(2)));
    }

    #[test]
    fn paused_keeps_ready_as_it_was_or_unknown() {
        let ready = Conditions::rolled_out().to_api(&[], Some(1), &time(10));
        let paused = Conditions::paused(Some(find(&ready, READY)));
        assert_eq!(paused.ready.status, Truth::True);
        assert_eq!(paused.ready.reason, "AllComponentsReady");
        assert_eq!(paused.progressing.reason, "Paused");
        let unknown = Conditions::paused(None);
        assert_eq!(unknown.ready.status, Truth::Unknown);
        assert_eq!(unknown.ready.reason, "Paused");
    }

    #[test]
    fn a_failure_is_degraded_with_its_reason_everywhere() {
        let failure = Failure {
            reason: "InvalidResource",
            message: "x".repeat(2 * MAX_MESSAGE),
        };
        for conditions in [
            Conditions::failed(&failure),
            Conditions::unparsable(&failure),
        ] {
            let api = conditions.to_api(&[], Some(3), &time(10));
            assert_eq!(find(&api, DEGRADED).status, "True");
            assert_eq!(find(&api, READY).status, "False");
            assert_eq!(find(&api, PROGRESSING).status, "False");
            assert!(api.iter().all(|c| c.reason == "InvalidResource"));
            assert!(
                api.iter()
                    .all(|c| c.message.chars().count() <= MAX_MESSAGE + 1)
            );
        }
    }

    /// A held-back model is `Degraded` with its reason while the system still serves; the
    /// generation is not called rolled out; without any risk engine the system is not ready.
    #[test]
    fn a_held_back_model_is_degraded_but_ready_while_the_engine_serves() {
        let failure = Failure {
            reason: "ModelInvalid",
            message: "the risk model in Secret m key model.txt cannot be served: ...".into(),
        };
        let held = Conditions::held_back(Conditions::rolled_out(), &failure, true);
        assert_eq!(held.ready, Conditions::rolled_out().ready);
        assert_eq!(
            (held.degraded.status, held.degraded.reason.as_ref()),
            (Truth::True, "ModelInvalid")
        );
        assert_eq!(held.degraded.message, failure.message);
        assert_eq!(
            (held.progressing.status, held.progressing.reason.as_ref()),
            (Truth::False, "ModelInvalid")
        );
        let rolling = Conditions::rolling_out(&["shop-payments-api 0/2 ready".into()]);
        let held = Conditions::held_back(rolling.clone(), &failure, true);
        assert_eq!(held.progressing, rolling.progressing);
        assert_eq!(held.ready, rolling.ready);
        let no_engine = Conditions::held_back(Conditions::rolled_out(), &failure, false);
        assert_eq!(
            (no_engine.ready.status, no_engine.ready.reason.as_ref()),
            (Truth::False, "ModelInvalid")
        );
        // Not a completed rollout: no `RolledOut` notice until the model is fixed.
        let previous = status(1, &Conditions::rolling_out(&["x".into()]));
        let next = status(
            2,
            &Conditions::held_back(Conditions::rolled_out(), &failure, true),
        );
        assert_eq!(
            reasons(notices(Some(&previous), &next, &Outcome::Paused)),
            ["Ready"]
        );
    }

    fn status(generation: i64, conditions: &Conditions) -> PaymentSystemStatus {
        PaymentSystemStatus {
            observed_generation: Some(generation),
            conditions: conditions.to_api(&[], Some(generation), &time(10)),
            api_url: Some("http://shop-payments-api.payments.svc:80".into()),
            ..PaymentSystemStatus::default()
        }
    }

    fn reasons(notices: Vec<Notice>) -> Vec<&'static str> {
        notices.into_iter().map(|notice| notice.reason).collect()
    }

    /// A rollout and readiness are told when the conditions change to them, once; the same
    /// status again, a failure or a pause tells nothing.
    #[test]
    fn notices_tell_each_change_once() {
        let waiting = status(
            1,
            &Conditions::rolling_out(&["shop-payments-api 0/2 ready".into()]),
        );
        let done = status(2, &Conditions::rolled_out());
        let failure = Failure {
            reason: "ApplyFailed",
            message: "x".into(),
        };
        let failed = Outcome::Failed(&failure);
        let told = notices(Some(&waiting), &done, &failed);
        assert_eq!(reasons(told.clone()), ["RolledOut", "Ready"]);
        assert!(told[0].note.contains("generation 2"), "{:?}", told[0]);
        assert!(reasons(notices(Some(&done), &done, &failed)).is_empty());
        assert!(reasons(notices(Some(&done), &waiting, &failed)).is_empty());
        let degraded = status(2, &Conditions::failed(&failure));
        assert!(reasons(notices(Some(&done), &degraded, &failed)).is_empty());
        // Recovering from a failure is a change again.
        assert_eq!(
            reasons(notices(Some(&degraded), &done, &failed)),
            ["RolledOut", "Ready"]
        );
        let paused = status(2, &Conditions::paused(None));
        assert!(reasons(notices(Some(&done), &paused, &Outcome::Paused)).is_empty());
        // Only an apply creates anything.
        assert!(!reasons(notices(None, &done, &failed)).contains(&"Created"));
    }

    fn operated(server: Server, object: &str) -> Readiness {
        Readiness {
            server,
            object: object.into(),
            desired: 3,
            ready_replicas: 0,
            ready: false,
            detail: "no status yet".into(),
        }
    }

    /// Operated clusters are durable whatever their readiness, and named; an ephemeral managed
    /// server next to one still makes the system not durable.
    #[test]
    fn operated_clusters_count_as_durable_and_never_hide_an_ephemeral_server() {
        let clusters = [
            operated(Server::RabbitMq, "RabbitmqCluster shop-mq"),
            operated(Server::Postgres, "Cluster shop-pg"),
        ];
        let both = durable(&[], &clusters);
        assert_eq!(
            (both.status, both.reason.as_ref()),
            (Truth::True, "PersistentStorage")
        );
        assert!(
            both.message
                .contains("RabbitmqCluster shop-mq, Cluster shop-pg keep theirs"),
            "{}",
            both.message
        );
        let none = durable(&[], &[]);
        assert_eq!(none.status, Truth::True);
        assert!(!none.message.contains("operators"), "{}", none.message);
        let mixed = durable(
            &[("shop-rabbitmq".into(), Ephemeral::OptedIn)],
            &clusters[1..],
        );
        assert_eq!(
            (mixed.status, mixed.reason.as_ref()),
            (Truth::False, "EphemeralStorage")
        );
        assert!(mixed.message.contains("shop-rabbitmq"), "{}", mixed.message);
    }

    #[test]
    fn the_warning_names_every_ephemeral_server_and_the_first_reason() {
        assert_eq!(warning(&[]), None);
        let (why, message) = warning(&[
            ("shop-rabbitmq".into(), Ephemeral::Legacy),
            ("shop-postgresql".into(), Ephemeral::OptedIn),
        ])
        .unwrap();
        assert_eq!(why.reason(), "LegacyEphemeralStorage");
        assert!(
            message.starts_with("shop-rabbitmq, shop-postgresql keep their data in an emptyDir")
        );
        assert!(message.contains("docs/production.md"), "{message}");
        let (why, message) = warning(&[("shop-rabbitmq".into(), Ephemeral::OptedIn)]).unwrap();
        assert_eq!(why.reason(), "EphemeralStorage");
        assert!(message.contains("storage.ephemeral is true"), "{message}");
    }

    fn claim(version: &str) -> ServedModel {
        ServedModel {
            version: version.into(),
            location: crate::validate::ModelLocation::Claim {
                claim_name: "models".into(),
                sub_path: None,
            },
        }
    }

    /// The risk engine Deployment with `annotations` on its template, rolled out or not.
    fn risk_engine(annotations: &[(&str, &str)], rolled: bool) -> Deployment {
        let mut deployment: Deployment = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "shop-risk-engine", "generation": 2},
            "spec": {
                "replicas": 1,
                "selector": {},
                "template": {"metadata": {"annotations": {}}},
            },
            "status": {
                "observedGeneration": if rolled { 2 } else { 1 },
                "replicas": 1, "updatedReplicas": 1, "readyReplicas": 1,
            },
        }))
        .unwrap();
        deployment
            .spec
            .template
            .metadata
            .as_mut()
            .unwrap()
            .annotations = Some(
            annotations
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        );
        deployment
    }

    #[test]
    fn a_model_version_is_reported_once_its_template_rolled_out() {
        let models = Models {
            champion: claim("m-2"),
            shadow: Some(claim("m-s")),
            copies: Vec::new(),
        };
        let before = ModelStatus {
            serving: Some("m-1".into()),
            shadow: None,
        };
        let template = [(MODEL_VERSION, "m-2"), (SHADOW_MODEL_VERSION, "m-s")];
        // Still rolling: what was reported stays.
        assert_eq!(
            model_status(Some(&before), Some(&models), &risk_engine(&template, false)),
            Some(before.clone())
        );
        let after = model_status(Some(&before), Some(&models), &risk_engine(&template, true));
        assert_eq!(
            after,
            Some(ModelStatus {
                serving: Some("m-2".into()),
                shadow: Some("m-s".into()),
            })
        );
        // A template of other versions (a refused model not applied) does not count.
        assert_eq!(
            model_status(
                Some(&before),
                Some(&models),
                &risk_engine(&[(MODEL_VERSION, "m-1")], true)
            ),
            Some(before.clone())
        );
        assert_eq!(
            model_status(Some(&before), None, &risk_engine(&[], true)),
            None
        );
        assert_eq!(
            models_rolled_out(&before, after.as_ref().unwrap()),
            vec![
                "risk engine model m-2 rolled out (was m-1)".to_owned(),
                "risk engine shadow model m-s rolled out".to_owned(),
            ]
        );
        assert!(models_rolled_out(&before, &before).is_empty());
    }
}
