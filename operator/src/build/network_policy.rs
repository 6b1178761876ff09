//! NetworkPolicies: only the API and the risk engine reach RabbitMQ, only the API reaches
//! PostgreSQL, the API's port is open to every client, and the risk engine accepts
//! connections on its health/metrics port only. Egress is left open (external brokers and
//! databases may be anywhere).

use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort,
    NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::meta;
use super::payments_api::API_PORT;
use super::risk_engine::RISK_PORT;
use crate::names::Component;
use crate::validate::Validated;

use super::managed::{AMQP_PORT, POSTGRES_PORT};

pub fn build(system: &Validated) -> Vec<NetworkPolicy> {
    let mut policies = Vec::new();
    if system.rabbitmq.managed().is_some() {
        policies.push(policy(
            system,
            Component::RabbitMq,
            AMQP_PORT,
            Some(&[Component::PaymentsApi, Component::RiskEngine]),
        ));
    }
    if system.database.managed().is_some() {
        policies.push(policy(
            system,
            Component::Postgres,
            POSTGRES_PORT,
            Some(&[Component::PaymentsApi]),
        ));
    }
    policies.push(policy(system, Component::PaymentsApi, API_PORT, None));
    policies.push(policy(system, Component::RiskEngine, RISK_PORT, None));
    policies
}

/// Ingress to `component`'s pods on `port` only, from the pods of `clients` (same
/// instance), or from anywhere when `clients` is `None`.
fn policy(
    system: &Validated,
    component: Component,
    port: i32,
    clients: Option<&[Component]>,
) -> NetworkPolicy {
    let from = clients.map(|clients| {
        clients
            .iter()
            .map(|client| NetworkPolicyPeer {
                pod_selector: Some(meta::selector(&system.names, *client)),
                ..NetworkPolicyPeer::default()
            })
            .collect()
    });
    NetworkPolicy {
        metadata: meta::object_meta(system, component, system.names.workload(component)),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(meta::selector(&system.names, component)),
            policy_types: Some(vec!["Ingress".into()]),
            ingress: Some(vec![NetworkPolicyIngressRule {
                from,
                ports: Some(vec![NetworkPolicyPort {
                    port: Some(IntOrString::Int(port)),
                    protocol: Some("TCP".into()),
                    end_port: None,
                }]),
            }]),
            ..NetworkPolicySpec::default()
        }),
    }
}
