//! HorizontalPodAutoscalers (`autoscaling/v2`) of the paysys services that ask for one
//! (`paymentsApi.autoscaling`, `riskEngine.autoscaling`), scaling on CPU use relative to the
//! pods' CPU request. The operator then leaves `spec.replicas` of the Deployment to the
//! autoscaler (see [`crate::replicas`]).

use k8s_openapi::api::autoscaling::v2::{
    CrossVersionObjectReference, HorizontalPodAutoscaler, HorizontalPodAutoscalerSpec, MetricSpec,
    MetricTarget, ResourceMetricSource,
};

use super::meta;
use crate::names::Workload;
use crate::validate::Validated;

pub fn build(system: &Validated) -> Vec<HorizontalPodAutoscaler> {
    [Workload::PaymentsApi, Workload::RiskEngine]
        .into_iter()
        .filter_map(|workload| {
            let autoscaling = system.autoscaling(workload)?;
            let component = workload.component();
            let name = system.names.workload(component);
            Some(HorizontalPodAutoscaler {
                metadata: meta::object_meta(system, component, name.clone()),
                spec: HorizontalPodAutoscalerSpec {
                    scale_target_ref: CrossVersionObjectReference {
                        api_version: Some("apps/v1".into()),
                        kind: "Deployment".into(),
                        name,
                    },
                    min_replicas: Some(autoscaling.min_replicas),
                    max_replicas: autoscaling.max_replicas,
                    metrics: Some(vec![MetricSpec {
                        type_: "Resource".into(),
                        resource: Some(ResourceMetricSource {
                            name: "cpu".into(),
                            target: MetricTarget {
                                type_: "Utilization".into(),
                                average_utilization: Some(
                                    autoscaling.target_cpu_utilization_percentage,
                                ),
                                ..MetricTarget::default()
                            },
                        }),
                        ..MetricSpec::default()
                    }]),
                    behavior: None,
                },
                status: None,
            })
        })
        .collect()
}
