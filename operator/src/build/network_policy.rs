//! NetworkPolicies: only the API and the risk engine reach RabbitMQ, only the API (and the
//! data feed's export) reaches PostgreSQL, the API's port is open to every client, and the
//! risk engine accepts connections on its health/metrics port only. Egress is left open
//! (external brokers and
//! databases may be anywhere).

use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort,
    NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::managed;
use super::meta;
use super::payments_api::API_PORT;
use super::risk_engine::RISK_PORT;
use crate::names::{Component, Server};
use crate::validate::Validated;

/// The NetworkPolicies, unless `networkPolicy.enabled` is false.
pub fn build(system: &Validated) -> Vec<NetworkPolicy> {
    if !system.network_policies {
        return Vec::new();
    }
    let mut policies: Vec<NetworkPolicy> = system
        .managed_servers()
        .map(|managed| {
            let clients: &[Component] = match managed.server {
                Server::RabbitMq => &[Component::PaymentsApi, Component::RiskEngine],
                // The data feed's export reads the payments too.
                Server::Postgres if system.data_feed.is_some() => {
                    &[Component::PaymentsApi, Component::DataFeed]
                }
                Server::Postgres => &[Component::PaymentsApi],
            };
            let (_, port) = managed::port_of(managed.server);
            policy(system, managed.server.component(), port, Some(clients))
        })
        .collect();
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
