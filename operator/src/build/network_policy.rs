//! NetworkPolicies: only the API and the risk engine reach RabbitMQ, only the API (and the
//! data feed's export) reaches PostgreSQL, the API's port is open to every client, and the
//! risk engine accepts connections on its health/metrics port only.
//!
//! Egress is left open (external brokers and databases may be anywhere), except the payments
//! API's when it delivers webhooks: those pods connect to addresses merchants choose, so their
//! egress is limited to what they need (DNS, the database, the broker, the identity
//! provider's keys) and to merchants on the webhook ports at public addresses or in the
//! allow-listed CIDRs, never the cluster's own or the cloud metadata ranges. The API refuses
//! those addresses itself (docs/webhooks.md); this is the second wall, for a bug in the first.

use k8s_openapi::api::networking::v1::{
    IPBlock, NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer,
    NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::managed;
use super::meta;
use super::payments_api::API_PORT;
use super::risk_engine::RISK_PORT;
use crate::names::{Component, Server};
use crate::validate::{Auth, Connection, JwtKey, Validated, Webhooks};

/// IPv4 ranges webhook deliveries never reach unless allow-listed: RFC 1918, CGNAT
/// (`100.64.0.0/10`, also used for cluster networks), link-local with the cloud metadata
/// service (`169.254.169.254`), loopback.
pub const DENIED_V4: [&str; 6] = [
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "100.64.0.0/10",
    "169.254.0.0/16",
    "127.0.0.0/8",
];
/// The IPv6 equivalents: unique local (`fc00::/7`), link-local, loopback.
pub const DENIED_V6: [&str; 3] = ["fc00::/7", "fe80::/10", "::1/128"];

/// DNS, which the API needs to resolve everything else (UDP, and TCP for long answers).
pub const DNS_PORT: i32 = 53;

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
    let mut api = policy(system, Component::PaymentsApi, API_PORT, None);
    if let (Some(webhooks), Some(spec)) = (&system.webhooks, api.spec.as_mut()) {
        spec.policy_types = Some(vec!["Ingress".into(), "Egress".into()]);
        spec.egress = Some(api_egress(system, webhooks));
    }
    policies.push(api);
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
                ports: Some(vec![tcp(port)]),
            }]),
            ..NetworkPolicySpec::default()
        }),
    }
}

/// Where the API pods may connect while they deliver webhooks: DNS, each dependency, the
/// identity provider's keys (a JWKS URL), and merchants.
fn api_egress(system: &Validated, webhooks: &Webhooks) -> Vec<NetworkPolicyEgressRule> {
    let anywhere = None;
    let mut rules = vec![NetworkPolicyEgressRule {
        to: anywhere.clone(),
        ports: Some(vec![port(DNS_PORT, "UDP"), tcp(DNS_PORT)]),
    }];
    for (server, connection) in [
        (Server::Postgres, &system.database),
        (Server::RabbitMq, &system.rabbitmq),
    ] {
        let (_, standard) = managed::port_of(server);
        let (to, ports) = match connection {
            // Only its pods, on its port.
            Connection::Managed(_) => (
                Some(vec![NetworkPolicyPeer {
                    pod_selector: Some(meta::selector(&system.names, server.component())),
                    ..NetworkPolicyPeer::default()
                }]),
                vec![standard],
            ),
            // Another operator's pods (their labels are that operator's): the standard port.
            Connection::Operated(_) => (anywhere.clone(), vec![standard]),
            // Anywhere (often a private network), on the ports of its URL.
            Connection::External { secret_name, key } => {
                let url = system
                    .secrets
                    .get(secret_name)
                    .and_then(|data| data.get(key))
                    .map(|value| String::from_utf8_lossy(&value.0).into_owned())
                    .unwrap_or_default();
                (anywhere.clone(), url_ports(url.trim(), server))
            }
        };
        rules.push(NetworkPolicyEgressRule {
            to,
            ports: Some(ports.into_iter().map(tcp).collect()),
        });
    }
    let merchants = merchant_peers(webhooks);
    rules.push(NetworkPolicyEgressRule {
        to: Some(merchants.clone()),
        ports: Some(webhooks.egress_ports.iter().copied().map(tcp).collect()),
    });
    if let Some(port) = jwks_port(&system.auth).filter(|p| !webhooks.egress_ports.contains(p)) {
        rules.push(NetworkPolicyEgressRule {
            to: Some(merchants),
            ports: Some(vec![tcp(port)]),
        });
    }
    rules
}

/// Every public address (all but [`DENIED_V4`] and [`DENIED_V6`]), and the allow-listed
/// networks (a peer of their own: peers add up, so they are reachable although denied above).
fn merchant_peers(webhooks: &Webhooks) -> Vec<NetworkPolicyPeer> {
    let block = |cidr: String, except: &[&str]| NetworkPolicyPeer {
        ip_block: Some(IPBlock {
            cidr,
            except: (!except.is_empty()).then(|| except.iter().map(|c| c.to_string()).collect()),
        }),
        ..NetworkPolicyPeer::default()
    };
    let mut peers = vec![
        block("0.0.0.0/0".into(), &DENIED_V4),
        block("::/0".into(), &DENIED_V6),
    ];
    peers.extend(
        webhooks
            .allowed_cidrs
            .iter()
            .map(|net| block(net.to_string(), &[])),
    );
    peers
}

/// The port of an `https` JWKS URL (the API fetches the identity provider's keys there). A
/// plain-http one is on loopback (the CRD allows no other), which no policy restricts.
fn jwks_port(auth: &Auth) -> Option<i32> {
    let Auth::User {
        jwt: Some((_, JwtKey::Jwks(url))),
        ..
    } = auth
    else {
        return None;
    };
    let rest = url.strip_prefix("https://")?;
    Some(authority_ports(rest, 443).into_iter().next().unwrap_or(443))
}

/// The ports of a connection URL's hosts, each host's own or the scheme's default
/// (`postgres://u:p@db-1:5433,db-2/app` has 5432 and 5433; `amqps://` defaults to 5671).
pub fn url_ports(url: &str, server: Server) -> Vec<i32> {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let default = match (server, scheme) {
        (Server::RabbitMq, "amqps") => 5671,
        (server, _) => managed::port_of(server).1,
    };
    authority_ports(rest, default)
}

/// The ports of the hosts in `rest` (a URL after `scheme://`), sorted, without repeats.
fn authority_ports(rest: &str, default: i32) -> Vec<i32> {
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let hosts = authority
        .rsplit_once('@')
        .map_or(authority, |(_, hosts)| hosts);
    let mut ports: Vec<i32> = hosts
        .split(',')
        .map(|host| {
            let port = match host.rsplit_once(']') {
                Some((_, after)) => after.strip_prefix(':'),
                None => host.rsplit_once(':').map(|(_, port)| port),
            };
            port.and_then(|port| port.parse::<u16>().ok())
                .filter(|port| *port != 0)
                .map_or(default, i32::from)
        })
        .collect();
    ports.sort_unstable();
    ports.dedup();
    ports
}

fn tcp(number: i32) -> NetworkPolicyPort {
    port(number, "TCP")
}

fn port(number: i32, protocol: &str) -> NetworkPolicyPort {
    NetworkPolicyPort {
        port: Some(IntOrString::Int(number)),
        protocol: Some(protocol.into()),
        end_port: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_gives_each_host_s_port_or_the_scheme_s_default() {
        for (url, server, ports) in [
            (
                "postgres://u:p@db.example:6432/app",
                Server::Postgres,
                vec![6432],
            ),
            (
                "postgresql://db.example/app?sslmode=require",
                Server::Postgres,
                vec![5432],
            ),
            (
                "postgres://u:p@db-1:5433,db-2/app",
                Server::Postgres,
                vec![5432, 5433],
            ),
            (
                "postgres://u:p%2F@[fd00::1]:5434/app",
                Server::Postgres,
                vec![5434],
            ),
            ("postgres://u:p@[fd00::1]/app", Server::Postgres, vec![5432]),
            ("amqp://u:p@mq:5673/%2f", Server::RabbitMq, vec![5673]),
            ("amqps://u:p@mq.example/vhost", Server::RabbitMq, vec![5671]),
            ("amqp://mq", Server::RabbitMq, vec![5672]),
            ("not a url", Server::RabbitMq, vec![5672]),
        ] {
            assert_eq!(url_ports(url, server), ports, "{url}");
        }
    }
}
