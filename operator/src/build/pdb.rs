//! PodDisruptionBudgets: one per component running more than one pod, so a node drain
//! never takes the API or the risk engine down entirely. A single pod gets none: a budget
//! would then block every drain.

use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::meta;
use crate::names::Component;
use crate::validate::Validated;

pub fn build(system: &Validated) -> Vec<PodDisruptionBudget> {
    [
        (Component::PaymentsApi, system.spec.payments_api.replicas),
        (Component::RiskEngine, system.spec.risk_engine.replicas),
    ]
    .into_iter()
    .filter(|(_, replicas)| *replicas > 1)
    .map(|(component, _)| budget(system, component))
    .collect()
}

fn budget(system: &Validated, component: Component) -> PodDisruptionBudget {
    PodDisruptionBudget {
        metadata: meta::object_meta(system, component, system.names.workload(component)),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(meta::selector(&system.names, component)),
            // A pod that is not ready serves nobody; do not let it block a drain.
            unhealthy_pod_eviction_policy: Some("AlwaysAllow".into()),
            ..PodDisruptionBudgetSpec::default()
        }),
        status: None,
    }
}
