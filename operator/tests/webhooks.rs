//! `spec.webhooks` through the pure steps: the generated key, the API's environment, the
//! checks, and the NetworkPolicy egress of the API pods (evaluated here on addresses, the way
//! a CNI would read it). On a real API server: `tests/real_apiserver/webhooks.rs`.

mod common;

use std::net::IpAddr;

use base64::Engine as _;
use common::{WEBHOOKS_KEY, secrets_for, system, validated};
use ipnet::IpNet;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Container, EnvVar};
use k8s_openapi::api::networking::v1::NetworkPolicySpec;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use paysys_operator::build::meta::CONFIG_HASH;
use paysys_operator::build::{Children, build, secrets};
use paysys_operator::names::GeneratedSecret;
use paysys_operator::observe::SecretData;
use paysys_operator::observe::secrets::{generated_secrets, referenced_secrets};
use paysys_operator::validate::{self, ValidationError};

const ENABLED: &str = "webhooks: {enabled: true}";

fn children(spec: &str) -> Children {
    build(&validated(&system(spec), &[]))
}

fn api(children: &Children) -> &Deployment {
    children
        .deployments
        .iter()
        .find(|d| d.metadata.name.as_deref() == Some("shop-payments-api"))
        .unwrap()
}

fn container(children: &Children) -> &Container {
    &api(children)
        .spec
        .template
        .spec
        .as_ref()
        .unwrap()
        .containers[0]
}

fn env<'a>(container: &'a Container, name: &str) -> Option<&'a EnvVar> {
    container.env.iter().flatten().find(|e| e.name == name)
}

fn env_value(container: &Container, name: &str) -> Option<String> {
    env(container, name).and_then(|e| e.value.clone())
}

fn webhook_variables(container: &Container) -> Vec<String> {
    container
        .env
        .iter()
        .flatten()
        .map(|e| e.name.clone())
        .filter(|name| name.starts_with("WEBHOOK"))
        .collect()
}

fn api_policy(children: &Children) -> NetworkPolicySpec {
    children
        .network_policies
        .iter()
        .find(|p| p.metadata.name.as_deref() == Some("shop-payments-api"))
        .unwrap()
        .spec
        .clone()
        .unwrap()
}

/// Whether `policy` lets the pods it selects connect to `address` on `port`/`protocol`, as a
/// CNI enforces it: no Egress policy type, everything; else some rule must match both the
/// port and the destination. A pod-selector peer matches cluster pods only, never an
/// address given here; a rule without peers matches every destination.
fn egress_allows(policy: &NetworkPolicySpec, address: &str, port: i32, protocol: &str) -> bool {
    let ip: IpAddr = address.parse().unwrap();
    if !policy
        .policy_types
        .iter()
        .flatten()
        .any(|kind| kind == "Egress")
    {
        return true;
    }
    policy.egress.iter().flatten().any(|rule| {
        let port_matches = rule.ports.as_ref().is_none_or(|ports| {
            ports.iter().any(|p| {
                p.protocol.as_deref().unwrap_or("TCP") == protocol
                    && p.port == Some(IntOrString::Int(port))
            })
        });
        let peer_matches = rule.to.as_ref().is_none_or(|peers| {
            peers.iter().any(|peer| {
                peer.ip_block.as_ref().is_some_and(|block| {
                    let within = |cidr: &String| cidr.parse::<IpNet>().unwrap().contains(&ip);
                    within(&block.cidr) && !block.except.iter().flatten().any(within)
                })
            })
        });
        port_matches && peer_matches
    })
}

#[test]
fn webhooks_are_off_by_default_with_no_key_no_environment_and_no_egress_rule() {
    let ps = system("");
    assert!(!ps.spec.webhooks.enabled);
    assert!(
        generated_secrets(&ps)
            .iter()
            .all(|(secret, _)| *secret != GeneratedSecret::WebhooksKey)
    );
    let off = children("");
    assert_eq!(webhook_variables(container(&off)), Vec::<String>::new());
    let policy = api_policy(&off);
    assert_eq!(policy.policy_types, Some(vec!["Ingress".to_string()]));
    assert_eq!(policy.egress, None);
    // Settings without `enabled` change nothing either.
    let settings = children("webhooks: {timeoutSeconds: 3, allowedCIDRs: [10.1.0.0/16]}");
    assert_eq!(
        webhook_variables(container(&settings)),
        Vec::<String>::new()
    );
    assert_eq!(api_policy(&settings).egress, None);
}

#[test]
fn enabled_webhooks_get_a_generated_key_by_reference_and_the_default_settings() {
    let ps = system(ENABLED);
    assert!(
        generated_secrets(&ps)
            .contains(&(GeneratedSecret::WebhooksKey, "shop-webhooks-key".into()))
    );
    let children = children(ENABLED);
    let container = container(&children);
    assert_eq!(
        env_value(container, "WEBHOOKS_ENABLED").as_deref(),
        Some("true")
    );
    let key = env(container, "WEBHOOK_SECRETS_KEY").unwrap();
    assert_eq!(key.value, None, "never a literal key in the Deployment");
    let selector = key
        .value_from
        .as_ref()
        .unwrap()
        .secret_key_ref
        .as_ref()
        .unwrap();
    assert_eq!(
        (selector.name.as_str(), selector.key.as_str()),
        ("shop-webhooks-key", "secrets-key")
    );
    // The API's own defaults, written out (docs/webhooks.md, "Configuration").
    for (name, value) in [
        ("WEBHOOK_RETRY_WINDOW_SECONDS", "259200"),
        ("WEBHOOK_TIMEOUT_MS", "10000"),
        ("WEBHOOK_MAX_IN_FLIGHT_PER_ENDPOINT", "8"),
    ] {
        assert_eq!(env_value(container, name).as_deref(), Some(value), "{name}");
    }
    assert_eq!(env(container, "WEBHOOK_ALLOWED_CIDRS"), None);
    assert_eq!(env(container, "WEBHOOK_ALLOW_HTTP"), None, "tests only");
}

#[test]
fn the_generated_key_is_what_the_api_reads_and_fresh_each_time() {
    let ps = system(ENABLED);
    let make = || {
        let secret = secrets::generate(&ps, GeneratedSecret::WebhooksKey);
        assert_eq!(secret.metadata.name.as_deref(), Some("shop-webhooks-key"));
        let value = secret.data.unwrap()["secrets-key"].0.clone();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(&value)
            .unwrap();
        assert_eq!(bytes.len(), 32, "an AES-256 key");
        value
    };
    assert_ne!(make(), make());
}

#[test]
fn settings_become_the_api_environment_and_roll_the_pods() {
    let spec = "webhooks:
  enabled: true
  retryWindowSeconds: 86400
  timeoutSeconds: 5
  maxInFlightPerEndpoint: 32
  allowedCIDRs: [10.20.3.4/16, 'fd00:1::/64']";
    let changed = children(spec);
    let container = container(&changed);
    for (name, value) in [
        ("WEBHOOK_RETRY_WINDOW_SECONDS", "86400"),
        ("WEBHOOK_TIMEOUT_MS", "5000"),
        ("WEBHOOK_MAX_IN_FLIGHT_PER_ENDPOINT", "32"),
        // Host bits cleared, as in the NetworkPolicy.
        ("WEBHOOK_ALLOWED_CIDRS", "10.20.0.0/16,fd00:1::/64"),
    ] {
        assert_eq!(env_value(container, name).as_deref(), Some(value), "{name}");
    }
    // Any change of the settings is a change of the pod template: the pods roll.
    let default = children(ENABLED);
    assert_ne!(api(&changed).spec.template, api(&default).spec.template);
    assert_ne!(
        api(&default).spec.template,
        api(&children("")).spec.template
    );
}

const USER_KEY: &str = "webhooks:
  enabled: true
  secretsKeySecret: {secretName: vault-webhooks}";

#[test]
fn a_user_named_key_secret_is_read_never_generated_and_checked() {
    let ps = system(USER_KEY);
    assert!(
        generated_secrets(&ps)
            .iter()
            .all(|(secret, _)| *secret != GeneratedSecret::WebhooksKey)
    );
    assert!(referenced_secrets(&ps).contains(&"vault-webhooks".to_string()));
    // Only while enabled: a disabled system does not wait for the Secret.
    let off = system(&USER_KEY.replace("enabled: true", "enabled: false"));
    assert!(!referenced_secrets(&off).contains(&"vault-webhooks".to_string()));
    validate::validate(&off, &secrets_for(&off, &[])).expect("valid without the Secret");

    let error = validate::validate(&ps, &secrets_for(&ps, &[])).unwrap_err();
    assert_eq!(
        error,
        ValidationError::SecretNotFound("vault-webhooks".into())
    );
    let error = validate::validate(
        &ps,
        &secrets_for(&ps, &[("vault-webhooks", &[("other", WEBHOOKS_KEY)])]),
    )
    .unwrap_err();
    assert_eq!(
        error,
        ValidationError::SecretKeyMissing {
            secret: "vault-webhooks".into(),
            key: "secrets-key".into()
        }
    );
    for bad in [
        "hunter2",
        "c2hvcnQ=",
        "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWYxMjM0",
    ] {
        let error = validate::validate(
            &ps,
            &secrets_for(&ps, &[("vault-webhooks", &[("secrets-key", bad)])]),
        )
        .unwrap_err();
        assert_eq!(error.reason(), "SecretKeyInvalid", "{bad}");
        assert!(error.to_string().contains("32 bytes"), "{error}");
        assert!(!error.to_string().contains(bad), "the value is never shown");
    }

    // Surrounding whitespace is fine (the API trims it too).
    let padded = format!("{WEBHOOKS_KEY}\n");
    let secrets = secrets_for(
        &ps,
        &[("vault-webhooks", &[("secrets-key", padded.as_str())])],
    );
    let children = build(&validate::validate(&ps, &secrets).unwrap());
    let selector = env(container(&children), "WEBHOOK_SECRETS_KEY")
        .unwrap()
        .value_from
        .clone()
        .unwrap()
        .secret_key_ref
        .unwrap();
    assert_eq!(selector.name, "vault-webhooks");
    // A new key in the user's Secret rolls the pods (the config hash covers it).
    let hash = |secrets: SecretData| {
        let children = build(&validate::validate(&ps, &secrets).unwrap());
        api(&children)
            .spec
            .template
            .metadata
            .as_ref()
            .unwrap()
            .annotations
            .as_ref()
            .unwrap()[CONFIG_HASH]
            .clone()
    };
    let other = base64::engine::general_purpose::STANDARD.encode([9u8; 32]);
    assert_ne!(
        hash(secrets.clone()),
        hash(secrets_for(
            &ps,
            &[("vault-webhooks", &[("secrets-key", other.as_str())])]
        ))
    );
    // Its own key name.
    let ps = system(&USER_KEY.replace("vault-webhooks}", "vault-webhooks, key: aes}"));
    let secrets = secrets_for(&ps, &[("vault-webhooks", &[("aes", WEBHOOKS_KEY)])]);
    let children = build(&validate::validate(&ps, &secrets).unwrap());
    let selector = env(container(&children), "WEBHOOK_SECRETS_KEY")
        .unwrap()
        .value_from
        .clone()
        .unwrap()
        .secret_key_ref
        .unwrap();
    assert_eq!(
        (selector.name.as_str(), selector.key.as_str()),
        ("vault-webhooks", "aes")
    );
}

#[test]
fn bad_settings_are_refused_before_anything_is_built() {
    for (spec, needle) in [
        (
            "webhooks: {retryWindowSeconds: 0}",
            "webhooks.retryWindowSeconds",
        ),
        (
            "webhooks: {retryWindowSeconds: 2592001}",
            "webhooks.retryWindowSeconds",
        ),
        ("webhooks: {timeoutSeconds: 0}", "webhooks.timeoutSeconds"),
        ("webhooks: {timeoutSeconds: 121}", "webhooks.timeoutSeconds"),
        (
            "webhooks: {maxInFlightPerEndpoint: 0}",
            "webhooks.maxInFlightPerEndpoint",
        ),
        ("webhooks: {egressPorts: []}", "webhooks.egressPorts"),
        (
            "webhooks: {egressPorts: [443, 65536]}",
            "webhooks.egressPorts",
        ),
        ("webhooks: {allowedCIDRs: [10.0.0.0/33]}", "10.0.0.0/33"),
        ("webhooks: {allowedCIDRs: [999.1.1.1/8]}", "999.1.1.1/8"),
        (
            "webhooks: {allowedCIDRs: [10.0.0.1]}",
            "webhooks.allowedCIDRs",
        ),
        (
            "webhooks: {secretsKeySecret: {secretName: ''}}",
            "webhooks.secretsKeySecret.secretName",
        ),
    ] {
        let error = validate::check(&system(spec)).unwrap_err();
        assert_eq!(error.reason(), "InvalidSpec", "{spec}");
        assert!(error.to_string().contains(needle), "{spec}: {error}");
    }
}

#[test]
fn the_api_egress_reaches_merchants_on_public_addresses_only() {
    let policy = api_policy(&children(ENABLED));
    assert_eq!(
        policy.policy_types,
        Some(vec!["Ingress".to_string(), "Egress".to_string()])
    );
    // Ingress as before: port 5000 from every client.
    assert_eq!(policy.ingress.as_ref().unwrap()[0].from, None);
    for public in ["93.184.216.34", "8.8.8.8", "2606:2800:220:1::1", "1.1.1.1"] {
        assert!(egress_allows(&policy, public, 443, "TCP"), "{public}");
        assert!(!egress_allows(&policy, public, 80, "TCP"), "{public}:80");
        assert!(!egress_allows(&policy, public, 443, "UDP"), "{public} udp");
    }
    for denied in [
        "10.0.0.1",
        "10.255.255.255",
        "172.16.0.1",
        "172.31.255.254",
        "192.168.1.1",
        "100.64.0.1",
        "100.127.255.254",
        "169.254.169.254",
        "169.254.0.1",
        "127.0.0.1",
        "fd00::1",
        "fc00::1",
        "fe80::1",
        "::1",
    ] {
        for port in [443, 80, 8080] {
            assert!(
                !egress_allows(&policy, denied, port, "TCP"),
                "{denied}:{port}"
            );
        }
    }
    // Just outside the denied ranges.
    for edge in ["172.32.0.1", "100.128.0.1", "11.0.0.1", "169.255.0.1"] {
        assert!(egress_allows(&policy, edge, 443, "TCP"), "{edge}");
    }
    // DNS anywhere, UDP and TCP.
    for protocol in ["UDP", "TCP"] {
        assert!(egress_allows(&policy, "10.96.0.10", 53, protocol));
        assert!(
            egress_allows(&policy, "169.254.20.10", 53, protocol),
            "node-local DNS"
        );
    }
}

#[test]
fn allow_listed_networks_and_ports_are_reachable_and_nothing_else_is() {
    let policy = api_policy(&children(
        "webhooks:
  enabled: true
  allowedCIDRs: [10.20.3.4/16, 'fd00:1::/64']
  egressPorts: [443, 8443]",
    ));
    for (address, port) in [
        ("10.20.0.1", 443),
        ("10.20.255.254", 8443),
        ("fd00:1::5", 443),
        ("8.8.8.8", 8443),
    ] {
        assert!(
            egress_allows(&policy, address, port, "TCP"),
            "{address}:{port}"
        );
    }
    for (address, port) in [
        ("10.21.0.1", 443),
        ("10.20.0.1", 5432),
        ("fd00:2::5", 443),
        ("169.254.169.254", 8443),
        ("8.8.8.8", 8080),
    ] {
        assert!(
            !egress_allows(&policy, address, port, "TCP"),
            "{address}:{port}"
        );
    }
    let cidrs: Vec<String> = policy
        .egress
        .iter()
        .flatten()
        .flat_map(|rule| rule.to.iter().flatten())
        .filter_map(|peer| peer.ip_block.as_ref())
        .map(|block| block.cidr.clone())
        .collect();
    assert!(cidrs.contains(&"10.20.0.0/16".to_string()), "{cidrs:?}");
}

/// The pod-selector peers of the rule allowing `port`.
fn pods_reached_on(policy: &NetworkPolicySpec, port: i32) -> Option<Vec<String>> {
    let rule = policy.egress.iter().flatten().find(|rule| {
        rule.ports
            .iter()
            .flatten()
            .any(|p| p.port == Some(IntOrString::Int(port)))
    })?;
    Some(
        rule.to
            .iter()
            .flatten()
            .map(|peer| {
                peer.pod_selector
                    .as_ref()
                    .unwrap()
                    .match_labels
                    .as_ref()
                    .unwrap()["app.kubernetes.io/name"]
                    .clone()
            })
            .collect(),
    )
}

#[test]
fn the_api_still_reaches_its_database_and_broker_wherever_they_are() {
    // Managed: their pods, on their ports, and not as addresses.
    let policy = api_policy(&children(ENABLED));
    assert_eq!(
        pods_reached_on(&policy, 5432),
        Some(vec!["postgresql".into()])
    );
    assert_eq!(
        pods_reached_on(&policy, 5672),
        Some(vec!["rabbitmq".into()])
    );
    assert!(!egress_allows(&policy, "10.0.0.7", 5432, "TCP"));

    // External: anywhere (often a private network), on the ports of their URLs.
    let ps = system(
        "webhooks: {enabled: true}
database:
  external: {secretName: db}
rabbitmq:
  external: {secretName: mq, key: uri}",
    );
    let secrets = secrets_for(
        &ps,
        &[
            (
                "db",
                &[(
                    "url",
                    "postgres://app:pw@db-1.internal:6432,db-2.internal/pay",
                )],
            ),
            ("mq", &[("uri", "amqps://app:pw@mq.internal/pay")]),
        ],
    );
    let policy = api_policy(&build(&validate::validate(&ps, &secrets).unwrap()));
    for port in [5432, 6432, 5671] {
        assert!(egress_allows(&policy, "10.0.0.7", port, "TCP"), "{port}");
    }
    assert!(!egress_allows(&policy, "10.0.0.7", 5672, "TCP"));
    assert!(!egress_allows(&policy, "169.254.169.254", 80, "TCP"));

    // Run by other operators: their standard ports.
    let policy = api_policy(&children(
        "webhooks: {enabled: true}
database:
  cloudNativePG: {}
rabbitmq:
  clusterOperator: {}",
    ));
    for port in [5432, 5672] {
        assert!(egress_allows(&policy, "10.0.0.7", port, "TCP"), "{port}");
    }
}

#[test]
fn an_identity_provider_s_keys_stay_reachable() {
    let ps = system(
        "webhooks: {enabled: true}
paymentsApi:
  auth:
    secretName: auth
    jwt: {algorithm: RS256, jwksUrl: 'https://idp.example:8443/keys'}",
    );
    let secrets = secrets_for(&ps, &[("auth", &[("api-keys", "a=0123456789abcdef")])]);
    let policy = api_policy(&build(&validate::validate(&ps, &secrets).unwrap()));
    assert!(egress_allows(&policy, "93.184.216.34", 8443, "TCP"));
    assert!(!egress_allows(&policy, "169.254.169.254", 8443, "TCP"));
}

#[test]
fn without_network_policies_webhooks_add_none() {
    assert!(
        children("webhooks: {enabled: true}\nnetworkPolicy: {enabled: false}")
            .network_policies
            .is_empty()
    );
}
