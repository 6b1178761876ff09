//! PodDisruptionBudgets: one per component running more than one pod (with an autoscaler:
//! whose `minReplicas` is more than one), so a node drain never takes the API or the risk
//! engine down entirely. A single pod gets none: a budget would then block every drain.

use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::meta;
use crate::names::Workload;
use crate::validate::Validated;

pub fn build(system: &Validated) -> Vec<PodDisruptionBudget> {
    [Workload::PaymentsApi, Workload::RiskEngine]
        .into_iter()
        .filter(|workload| system.min_replicas(*workload) > 1)
        .map(|workload| budget(system, workload))
        .collect()
}

fn budget(system: &Validated, workload: Workload) -> PodDisruptionBudget {
    let component = workload.component();
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
