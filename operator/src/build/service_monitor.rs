//! The Prometheus Operator's `ServiceMonitor`s (`monitoring.coreos.com/v1`), one per paysys
//! service, when `monitoring.serviceMonitor` is set: Prometheus then scrapes `/metrics` of the
//! payments API (through its Service) and of the risk engine (through a headless Service of
//! its own, built here, since nothing else reaches the engine).
//!
//! The `ServiceMonitor` type below has only the fields paysys sets (server-side apply leaves
//! the others to their defaults). Its CRD is the Prometheus Operator's: a kind marked
//! `[foreign]` in the list of kinds, so a system asking for monitors where that CRD is absent
//! is `Degraded` (`CrdMissing`) with the install command below, and nothing is applied.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::CustomResource;
use serde::{Deserialize, Serialize};

use super::meta;
use super::risk_engine::RISK_PORT;
use crate::foreign::ForeignKind;
use crate::names::{Component, Workload};
use crate::validate::Validated;

/// The fields of a `ServiceMonitor` that paysys sets.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[kube(
    group = "monitoring.coreos.com",
    version = "v1",
    kind = "ServiceMonitor",
    plural = "servicemonitors",
    namespaced,
    schema = "disabled",
    derive = "PartialEq"
)]
#[serde(rename_all = "camelCase")]
pub struct ServiceMonitorSpec {
    /// The Services (in the monitor's namespace) whose endpoints are scraped.
    pub selector: LabelSelector,
    pub endpoints: Vec<Endpoint>,
}

/// One scraped port of the selected Services.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Endpoint {
    /// The Service port's name.
    pub port: String,
    pub path: String,
}

impl ForeignKind for ServiceMonitor {
    const OPERATOR: &'static str = "the Prometheus Operator";
    const INSTALL: &'static str = "kubectl create -f https://github.com/prometheus-operator/prometheus-operator/releases/download/v0.93.0/bundle.yaml (or helm install the kube-prometheus-stack chart)";
}

/// Name of the scraped port, on the API's Service and on the risk engine's metrics Service
/// (both the containers' `http` port).
const PORT: &str = "http";

/// A `ServiceMonitor` per paysys service, if `monitoring.serviceMonitor` is set.
pub fn build(system: &Validated) -> Vec<ServiceMonitor> {
    let Some(spec) = &system.service_monitor else {
        return Vec::new();
    };
    [Workload::PaymentsApi, Workload::RiskEngine]
        .into_iter()
        .map(|workload| {
            let component = workload.component();
            let mut metadata =
                meta::object_meta(system, component, system.names.workload(component));
            // The user's labels (what their Prometheus selects monitors by), never over ours.
            let mut labels: BTreeMap<String, String> = spec.labels.clone();
            labels.extend(metadata.labels.take().unwrap_or_default());
            metadata.labels = Some(labels);
            ServiceMonitor {
                metadata,
                spec: ServiceMonitorSpec {
                    selector: meta::selector(&system.names, component),
                    endpoints: vec![Endpoint {
                        port: PORT.into(),
                        path: "/metrics".into(),
                    }],
                },
            }
        })
        .collect()
}

/// The risk engine's headless metrics Service, if `monitoring.serviceMonitor` is set (the
/// engine serves nothing else: without monitors it has no Service).
pub fn metrics_services(system: &Validated) -> Vec<Service> {
    if system.service_monitor.is_none() {
        return Vec::new();
    }
    let component = Component::RiskEngine;
    vec![Service {
        metadata: meta::object_meta(system, component, system.names.workload(component)),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            selector: Some(meta::selector_labels(&system.names, component)),
            ports: Some(vec![ServicePort {
                name: Some(PORT.into()),
                port: RISK_PORT,
                target_port: Some(IntOrString::String(PORT.into())),
                protocol: Some("TCP".into()),
                app_protocol: Some("http".into()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        status: None,
    }]
}
