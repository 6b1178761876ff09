//! Last step of the pipeline: what the cluster made of the children, as the resource's
//! status.
//!
//! The status is a pure function of its inputs (and of the previous status, whose transition
//! times are kept while a condition's status holds), so reconciling an unchanged system yields
//! an identical status and no write at all.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::ResourceExt;

use crate::crd::{ComponentStatus, PaymentSystem, PaymentSystemStatus};
use crate::names::{Component, Names};

pub const READY: &str = "Ready";
pub const PROGRESSING: &str = "Progressing";
pub const DEGRADED: &str = "Degraded";

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

/// The outcome of one reconcile, as the status step sees it.
pub enum Outcome<'a> {
    /// Children applied; here are the Deployments the API server returned.
    Applied {
        deployments: &'a [Deployment],
        api_url: String,
        api_key_secret: Option<String>,
    },
    /// `paused: true`: nothing was touched.
    Paused,
    /// The reconcile failed with this reason (a CamelCase word) and message.
    Failed { reason: &'a str, message: String },
}

/// The status `ps` should have after `outcome`, at time `now`.
pub fn compute(ps: &PaymentSystem, outcome: &Outcome<'_>, now: &Time) -> PaymentSystemStatus {
    let previous = ps.status.clone().unwrap_or_default();
    let generation = ps.metadata.generation;
    let mut status = PaymentSystemStatus {
        observed_generation: generation,
        ..previous.clone()
    };
    let (ready, progressing, degraded) = match outcome {
        Outcome::Applied {
            deployments,
            api_url,
            api_key_secret,
        } => {
            let names = Names::new(&ps.name_any());
            let find = |component: Component| {
                deployments
                    .iter()
                    .find(|deployment| deployment.name_any() == names.workload(component))
            };
            status.payments_api = find(Component::PaymentsApi).map(component_status);
            status.risk_engine = find(Component::RiskEngine).map(component_status);
            status.rabbitmq = find(Component::RabbitMq).map(component_status);
            status.database = find(Component::Postgres).map(component_status);
            status.api_url = Some(api_url.clone());
            status.api_key_secret = api_key_secret.clone();
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
                .collect();
            if waiting.is_empty() {
                (
                    (
                        "True",
                        "AllComponentsReady",
                        "every component is ready".to_string(),
                    ),
                    (
                        "False",
                        "RolloutComplete",
                        "every Deployment runs the current spec".to_string(),
                    ),
                    (
                        "False",
                        "ReconcileSucceeded",
                        "the last reconcile succeeded".to_string(),
                    ),
                )
            } else {
                let message = format!("waiting for {}", waiting.join(", "));
                (
                    ("False", "ComponentsNotReady", message.clone()),
                    ("True", "RollingOut", message),
                    (
                        "False",
                        "ReconcileSucceeded",
                        "the last reconcile succeeded".to_string(),
                    ),
                )
            }
        }
        Outcome::Paused => {
            let message = "spec.paused is true: the operator changes nothing".to_string();
            let ready = previous_condition(&previous, READY)
                .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()));
            let (ready_status, ready_reason, ready_message) =
                ready.unwrap_or(("Unknown".into(), "Paused".into(), message.clone()));
            return finish(
                status,
                &previous,
                generation,
                now,
                [
                    (READY, &ready_status, &ready_reason, ready_message),
                    (PROGRESSING, "False", "Paused", message.clone()),
                    (DEGRADED, "False", "Paused", message),
                ],
            );
        }
        Outcome::Failed { reason, message } => (
            ("False", *reason, message.clone()),
            (
                "False",
                *reason,
                "the last reconcile failed; retrying with backoff".to_string(),
            ),
            ("True", *reason, message.clone()),
        ),
    };
    finish(
        status,
        &previous,
        generation,
        now,
        [
            (READY, ready.0, ready.1, ready.2),
            (PROGRESSING, progressing.0, progressing.1, progressing.2),
            (DEGRADED, degraded.0, degraded.1, degraded.2),
        ],
    )
}

fn previous_condition<'a>(status: &'a PaymentSystemStatus, kind: &str) -> Option<&'a Condition> {
    status
        .conditions
        .iter()
        .find(|condition| condition.type_ == kind)
}

fn finish(
    mut status: PaymentSystemStatus,
    previous: &PaymentSystemStatus,
    generation: Option<i64>,
    now: &Time,
    conditions: [(&str, &str, &str, String); 3],
) -> PaymentSystemStatus {
    status.conditions = conditions
        .into_iter()
        .map(|(kind, value, reason, message)| {
            // The transition time moves only when the condition's status does.
            let since = previous_condition(previous, kind)
                .filter(|old| old.status == value)
                .map(|old| old.last_transition_time.clone())
                .unwrap_or_else(|| now.clone());
            Condition {
                type_: kind.into(),
                status: value.into(),
                reason: reason.into(),
                message,
                observed_generation: generation,
                last_transition_time: since,
            }
        })
        .collect();
    status
}
