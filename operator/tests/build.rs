//! Pure builder tests: from small YAML resources to the child objects.

mod common;

use common::{secrets_for, system, validated};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Container, EnvVar, PodSpec};
use paysys_core::risk_rules::RiskRules;
use paysys_operator::build::meta::CONFIG_HASH;
use paysys_operator::build::{Children, build};
use paysys_operator::validate::{self, ValidationError};

fn children(spec: &str) -> Children {
    build(&validated(&system(spec), &[]))
}

fn deployment<'a>(children: &'a Children, name: &str) -> &'a Deployment {
    children
        .deployments
        .iter()
        .find(|d| d.metadata.name.as_deref() == Some(name))
        .unwrap_or_else(|| panic!("no Deployment {name}"))
}

fn pod(deployment: &Deployment) -> &PodSpec {
    deployment.spec.template.spec.as_ref().unwrap()
}

fn container(deployment: &Deployment) -> &Container {
    &pod(deployment).containers[0]
}

fn env<'a>(container: &'a Container, name: &str) -> Option<&'a EnvVar> {
    container.env.iter().flatten().find(|e| e.name == name)
}

fn env_value(container: &Container, name: &str) -> Option<String> {
    env(container, name).and_then(|e| e.value.clone())
}

fn env_secret(container: &Container, name: &str) -> (String, String) {
    let selector = env(container, name)
        .and_then(|e| e.value_from.as_ref())
        .and_then(|v| v.secret_key_ref.as_ref())
        .unwrap_or_else(|| panic!("{name} is not from a Secret"));
    (selector.name.clone(), selector.key.clone())
}

fn hash(deployment: &Deployment) -> String {
    deployment
        .spec
        .template
        .metadata
        .as_ref()
        .unwrap()
        .annotations
        .as_ref()
        .unwrap()[CONFIG_HASH]
        .clone()
}

fn names<T: kube::Resource>(objects: &[T]) -> Vec<String> {
    objects
        .iter()
        .map(|o| o.meta().name.clone().unwrap())
        .collect()
}

#[test]
fn empty_spec_builds_a_complete_system() {
    let children = children("");
    assert_eq!(names(&children.config_maps), ["shop-risk-rules"]);
    assert_eq!(
        names(&children.deployments),
        [
            "shop-rabbitmq",
            "shop-postgresql",
            "shop-payments-api",
            "shop-risk-engine"
        ]
    );
    assert_eq!(
        names(&children.services),
        ["shop-rabbitmq", "shop-postgresql", "shop-payments-api"]
    );
    assert!(
        children.persistent_volume_claims.is_empty(),
        "no storage asked for"
    );
    assert_eq!(
        names(&children.pod_disruption_budgets),
        ["shop-payments-api"]
    );
    assert_eq!(
        names(&children.network_policies),
        [
            "shop-rabbitmq",
            "shop-postgresql",
            "shop-payments-api",
            "shop-risk-engine"
        ]
    );
    let api = deployment(&children, "shop-payments-api");
    assert_eq!(api.spec.replicas, Some(2));
    assert_eq!(
        container(api).image.as_deref(),
        Some("ghcr.io/paysys/payments-api:0.1.0")
    );
    assert_eq!(
        container(deployment(&children, "shop-risk-engine"))
            .image
            .as_deref(),
        Some("ghcr.io/paysys/risk-engine:0.1.0")
    );
}

/// Every kind in the list of child kinds (operator/src/children.rs) is built by some spec:
/// a kind listed (and so applied, pruned, watched and granted) but never built fails here.
#[test]
fn every_listed_child_kind_is_built() {
    let children = children(
        "rabbitmq:\n  managed:\n    storage: {size: 2Gi}\ndatabase:\n  managed:\n    storage: {size: 2Gi}\ndataFeed: {}\n",
    );
    let built: std::collections::BTreeSet<String> = children
        .metas()
        .into_iter()
        .map(|(kind, _)| kind.into_owned())
        .collect();
    let listed: std::collections::BTreeSet<String> = Children::kinds()
        .into_iter()
        .map(|kind| kind.kind)
        .collect();
    assert_eq!(built, listed);
}

#[test]
fn every_child_has_labels_and_an_owner_reference() {
    let children = children("rabbitmq:\n  managed:\n    storage: {size: 2Gi}\n");
    let metas: Vec<&kube::api::ObjectMeta> =
        children.metas().into_iter().map(|(_, meta)| meta).collect();
    assert_eq!(metas.len(), 1 + 1 + 3 + 4 + 1 + 4);
    for meta in metas {
        let name = meta.name.as_deref().unwrap();
        assert_eq!(meta.namespace.as_deref(), Some("payments"), "{name}");
        let labels = meta.labels.as_ref().unwrap();
        assert_eq!(labels["app.kubernetes.io/instance"], "shop", "{name}");
        assert_eq!(
            labels["app.kubernetes.io/managed-by"], "paysys-operator",
            "{name}"
        );
        assert_eq!(labels["app.kubernetes.io/part-of"], "paysys", "{name}");
        assert!(labels.contains_key("app.kubernetes.io/name"), "{name}");
        assert!(labels.contains_key("app.kubernetes.io/component"), "{name}");
        let owners = meta.owner_references.as_ref().unwrap();
        assert_eq!(owners.len(), 1);
        assert_eq!(owners[0].kind, "PaymentSystem");
        assert_eq!(owners[0].api_version, "paysys.io/v1alpha1");
        assert_eq!(owners[0].name, "shop");
        assert_eq!(owners[0].uid, "0b7a3f4e-1111-2222-3333-444455556666");
        assert_eq!(owners[0].controller, Some(true));
    }
}

#[test]
fn payments_api_environment_follows_the_contract() {
    let children = children(
        "riskEngine:\n  rules:\n    velocity: {windowSeconds: 600, maxCount: 5}\npaymentsApi:\n  maxAmount: \"2500.50\"\n  dbMaxConnections: 8\n  logLevel: debug\n",
    );
    let api = container(deployment(&children, "shop-payments-api"));
    assert_eq!(env_value(api, "PORT").as_deref(), Some("5000"));
    assert_eq!(
        env_secret(api, "DATABASE_URL"),
        ("shop-postgresql-credentials".into(), "url".into())
    );
    assert_eq!(
        env_secret(api, "AMQP_URL"),
        ("shop-rabbitmq-credentials".into(), "url".into())
    );
    assert_eq!(
        env_value(api, "API_KEYS_FILE").as_deref(),
        Some("/etc/paysys/auth/api-keys")
    );
    assert_eq!(
        env_value(api, "VELOCITY_WINDOW_SECONDS").as_deref(),
        Some("600")
    );
    assert_eq!(env_value(api, "MAX_AMOUNT").as_deref(), Some("2500.50"));
    assert_eq!(env_value(api, "DB_MAX_CONNECTIONS").as_deref(), Some("8"));
    assert_eq!(env_value(api, "LOG_FORMAT").as_deref(), Some("json"));
    assert_eq!(env_value(api, "RUST_LOG").as_deref(), Some("debug"));
    assert!(env(api, "JWT_ALGORITHM").is_none());
    let volumes = pod(deployment(&children, "shop-payments-api"))
        .volumes
        .as_ref()
        .unwrap();
    let auth = volumes
        .iter()
        .find(|v| v.name == "auth")
        .unwrap()
        .secret
        .as_ref()
        .unwrap();
    assert_eq!(auth.secret_name.as_deref(), Some("shop-api-key"));
    assert_eq!(auth.items.as_ref().unwrap()[0].key, "api-keys");
}

#[test]
fn velocity_window_is_not_set_without_velocity_rules() {
    let children = children("");
    let api = container(deployment(&children, "shop-payments-api"));
    assert!(env(api, "VELOCITY_WINDOW_SECONDS").is_none());
}

#[test]
fn risk_engine_environment_and_rules_file() {
    let children = children(
        "riskEngine:\n  mode: random\n  approvalProbability: 0.25\n  prefetch: 50\n  rules:\n    version: strict-1\n    maxAmount: {USD: \"10000\"}\n",
    );
    let risk = container(deployment(&children, "shop-risk-engine"));
    assert_eq!(env_value(risk, "PORT").as_deref(), Some("8080"));
    assert_eq!(env_value(risk, "RISK_MODE").as_deref(), Some("random"));
    assert_eq!(
        env_value(risk, "RISK_APPROVAL_PROBABILITY").as_deref(),
        Some("0.25")
    );
    assert_eq!(env_value(risk, "RISK_PREFETCH").as_deref(), Some("50"));
    assert_eq!(
        env_secret(risk, "AMQP_URL"),
        ("shop-rabbitmq-credentials".into(), "url".into())
    );
    let rules_file = env_value(risk, "RISK_RULES_FILE").unwrap();
    assert_eq!(rules_file, "/etc/paysys/risk/rules.yaml");
    let mount = risk
        .volume_mounts
        .as_ref()
        .unwrap()
        .iter()
        .find(|m| m.name == "rules")
        .unwrap();
    assert!(rules_file.starts_with(&mount.mount_path));
    assert!(
        env(risk, "DATABASE_URL").is_none(),
        "the risk engine has no database"
    );
    let rules_yaml = &children.config_maps[0].data.as_ref().unwrap()["rules.yaml"];
    let rules: RiskRules = serde_norway::from_str(rules_yaml).unwrap();
    assert_eq!(rules.version, "strict-1");
    assert_eq!(rules.max_amount["USD"], "10000");
}

#[test]
fn every_container_is_locked_down_and_probed() {
    let children = children("");
    for deployment in &children.deployments {
        let name = deployment.metadata.name.clone().unwrap();
        let pod = pod(deployment);
        let pod_security = pod.security_context.as_ref().unwrap();
        assert_eq!(pod_security.run_as_non_root, Some(true), "{name}");
        assert!(pod_security.run_as_user.unwrap() > 0, "{name}");
        assert_eq!(
            pod_security.seccomp_profile.as_ref().unwrap().type_,
            "RuntimeDefault",
            "{name}"
        );
        assert_eq!(pod.automount_service_account_token, Some(false), "{name}");
        for container in &pod.containers {
            let security = container.security_context.as_ref().unwrap();
            assert_eq!(security.read_only_root_filesystem, Some(true), "{name}");
            assert_eq!(security.allow_privilege_escalation, Some(false), "{name}");
            assert_eq!(
                security.capabilities.as_ref().unwrap().drop.as_deref(),
                Some(&["ALL".to_string()][..]),
                "{name}"
            );
            assert!(container.readiness_probe.is_some(), "{name}");
            assert!(container.liveness_probe.is_some(), "{name}");
            let resources = container.resources.as_ref().unwrap();
            assert!(
                resources.requests.as_ref().unwrap().contains_key("memory"),
                "{name}"
            );
            assert!(
                resources.limits.as_ref().unwrap().contains_key("memory"),
                "{name}"
            );
        }
    }
    for service in ["shop-payments-api", "shop-risk-engine"] {
        let c = container(deployment(&children, service));
        let path = |probe: &Option<k8s_openapi::api::core::v1::Probe>| {
            probe
                .as_ref()
                .unwrap()
                .http_get
                .as_ref()
                .unwrap()
                .path
                .clone()
                .unwrap()
        };
        assert_eq!(path(&c.liveness_probe), "/healthz", "{service}");
        assert_eq!(path(&c.readiness_probe), "/readyz", "{service}");
        assert_eq!(path(&c.startup_probe), "/healthz", "{service}");
    }
}

#[test]
fn pod_disruption_budgets_only_above_one_replica() {
    let pdbs = |spec: &str| names(&children(spec).pod_disruption_budgets);
    assert!(pdbs("paymentsApi: {replicas: 1}\nriskEngine: {replicas: 1}").is_empty());
    assert!(pdbs("paymentsApi: {replicas: 0}\nriskEngine: {replicas: 0}").is_empty());
    assert_eq!(
        pdbs("paymentsApi: {replicas: 3}\nriskEngine: {replicas: 2}"),
        ["shop-payments-api", "shop-risk-engine"]
    );
    assert_eq!(
        pdbs("paymentsApi: {replicas: 1}\nriskEngine: {replicas: 2}"),
        ["shop-risk-engine"]
    );
}

#[test]
fn config_hash_changes_exactly_when_the_configuration_does() {
    let hashes = |spec: &str, user: &[(&str, &[(&str, &str)])]| {
        let children = build(&validated(&system(spec), user));
        ["shop-payments-api", "shop-risk-engine", "shop-postgresql"]
            .map(|name| hash(deployment(&children, name)))
    };
    let base = hashes("", &[]);
    assert_eq!(base, hashes("", &[]), "deterministic");
    // Scaling or log level is not configuration read from a Secret/ConfigMap.
    assert_eq!(
        base,
        hashes("paymentsApi: {replicas: 5, logLevel: debug}", &[])
    );
    // New rules roll the risk engine only.
    let rules = hashes("riskEngine:\n  rules: {declineThreshold: 50}", &[]);
    assert_eq!(rules[0], base[0]);
    assert_ne!(rules[1], base[1]);
    assert_eq!(rules[2], base[2]);
    // A user auth Secret's content rolls the API only, and so does each edit of it.
    let auth = "paymentsApi:\n  auth: {secretName: shop-auth}";
    let keys_a = hashes(
        auth,
        &[("shop-auth", &[("api-keys", "alice=aaaaaaaaaaaaaaaaaaaa")])],
    );
    let keys_b = hashes(
        auth,
        &[("shop-auth", &[("api-keys", "alice=bbbbbbbbbbbbbbbbbbbb")])],
    );
    assert_ne!(keys_a[0], base[0]);
    assert_ne!(keys_a[0], keys_b[0]);
    assert_eq!(keys_a[1..], keys_b[1..]);
}

#[test]
fn external_dependencies_replace_the_managed_servers() {
    let spec = "rabbitmq:\n  external: {secretName: broker}\ndatabase:\n  external: {secretName: db, key: dsn}";
    let ps = system(spec);
    let user: &[(&str, &[(&str, &str)])] = &[
        ("broker", &[("url", "amqps://u:p@mq.example.com/prod")]),
        ("db", &[("dsn", "postgres://u:p@db.example.com/paysys")]),
    ];
    let children = build(&validated(&ps, user));
    assert_eq!(
        names(&children.deployments),
        ["shop-payments-api", "shop-risk-engine"]
    );
    assert_eq!(names(&children.services), ["shop-payments-api"]);
    assert_eq!(
        names(&children.network_policies),
        ["shop-payments-api", "shop-risk-engine"]
    );
    let api = container(deployment(&children, "shop-payments-api"));
    assert_eq!(env_secret(api, "AMQP_URL"), ("broker".into(), "url".into()));
    assert_eq!(env_secret(api, "DATABASE_URL"), ("db".into(), "dsn".into()));
    let risk = container(deployment(&children, "shop-risk-engine"));
    assert_eq!(
        env_secret(risk, "AMQP_URL"),
        ("broker".into(), "url".into())
    );
    // No generated credentials are needed any more.
    let generated: Vec<String> = validate::generated_secrets(&ps)
        .into_iter()
        .map(|(_, n)| n)
        .collect();
    assert_eq!(generated, ["shop-api-key"]);
}

#[test]
fn managed_storage_uses_a_claim_and_recreate() {
    let children =
        children("database:\n  managed:\n    storage: {size: 20Gi, storageClassName: fast}");
    assert_eq!(
        names(&children.persistent_volume_claims),
        ["shop-postgresql-data"]
    );
    let claim = children.persistent_volume_claims[0].spec.as_ref().unwrap();
    assert_eq!(claim.storage_class_name.as_deref(), Some("fast"));
    assert_eq!(
        claim.resources.as_ref().unwrap().requests.as_ref().unwrap()["storage"].0,
        "20Gi"
    );
    let postgres = deployment(&children, "shop-postgresql");
    assert_eq!(
        postgres.spec.strategy.as_ref().unwrap().type_.as_deref(),
        Some("Recreate")
    );
    assert_eq!(postgres.spec.replicas, Some(1));
    let data = pod(postgres)
        .volumes
        .as_ref()
        .unwrap()
        .iter()
        .find(|v| v.name == "data")
        .unwrap();
    assert_eq!(
        data.persistent_volume_claim.as_ref().unwrap().claim_name,
        "shop-postgresql-data"
    );
    // Without storage the data lives in an emptyDir.
    let rabbit = deployment(&children, "shop-rabbitmq");
    let data = pod(rabbit)
        .volumes
        .as_ref()
        .unwrap()
        .iter()
        .find(|v| v.name == "data")
        .unwrap();
    assert!(data.empty_dir.is_some());
    assert_eq!(
        rabbit.spec.strategy.as_ref().unwrap().type_.as_deref(),
        Some("Recreate")
    );
    let api = deployment(&children, "shop-payments-api");
    assert_eq!(
        api.spec.strategy.as_ref().unwrap().type_.as_deref(),
        Some("RollingUpdate")
    );
}

#[test]
fn user_auth_secret_with_jwt_is_wired_by_its_keys() {
    let ps = system(
        "paymentsApi:\n  auth:\n    secretName: shop-auth\n    jwt: {algorithm: HS256, issuer: idp, audience: paysys}",
    );
    let user: &[(&str, &[(&str, &str)])] = &[(
        "shop-auth",
        &[("jwt-secret", "s3cr3t-s3cr3t-s3cr3t-s3cr3t-s3cr3t")],
    )];
    let children = build(&validated(&ps, user));
    let api = container(deployment(&children, "shop-payments-api"));
    assert_eq!(env_value(api, "JWT_ALGORITHM").as_deref(), Some("HS256"));
    assert_eq!(
        env_value(api, "JWT_SECRET_FILE").as_deref(),
        Some("/etc/paysys/auth/jwt-secret")
    );
    assert_eq!(env_value(api, "JWT_ISSUER").as_deref(), Some("idp"));
    assert_eq!(env_value(api, "JWT_AUDIENCE").as_deref(), Some("paysys"));
    assert!(
        env(api, "API_KEYS_FILE").is_none(),
        "the Secret has no api-keys"
    );
    assert!(
        validate::generated_secrets(&ps)
            .iter()
            .all(|(_, n)| n != "shop-api-key")
    );
}

#[test]
fn missing_secrets_and_keys_are_validation_errors() {
    let ps =
        system("paymentsApi:\n  auth:\n    secretName: shop-auth\n    jwt: {algorithm: RS256}");
    let error = validate::validate(&ps, &secrets_for(&ps, &[])).unwrap_err();
    assert_eq!(error, ValidationError::SecretNotFound("shop-auth".into()));
    let error = validate::validate(
        &ps,
        &secrets_for(
            &ps,
            &[("shop-auth", &[("api-keys", "a=bbbbbbbbbbbbbbbbbbbbbb")])],
        ),
    )
    .unwrap_err();
    assert_eq!(
        error,
        ValidationError::SecretKeyMissing {
            secret: "shop-auth".into(),
            key: "jwt-public-key.pem".into()
        }
    );
    let ps = system("database:\n  external: {secretName: db}");
    let error = validate::validate(&ps, &secrets_for(&ps, &[("db", &[("dsn", "x")])])).unwrap_err();
    assert_eq!(error.reason(), "SecretKeyMissing");
}

#[test]
fn invalid_specs_are_refused_before_anything_is_built() {
    for (spec, needle) in [
        ("paymentsApi: {replicas: -1}", "paymentsApi.replicas"),
        (
            "riskEngine: {approvalProbability: 1.5}",
            "approvalProbability",
        ),
        ("database: {}", "exactly one"),
        (
            "rabbitmq:\n  managed: {}\n  external: {secretName: x}",
            "exactly one",
        ),
        ("paymentsApi: {maxAmount: \"-5\"}", "maxAmount"),
        ("paymentsApi: {maxAmount: \"0.00\"}", "maxAmount"),
        (
            "paymentsApi:\n  auth:\n    jwt: {algorithm: HS256}",
            "secretName",
        ),
    ] {
        let error = validate::check(&system(spec)).unwrap_err();
        assert!(error.to_string().contains(needle), "{spec}: {error}");
        assert_eq!(error.reason(), "InvalidSpec");
    }
}

#[test]
fn network_policies_can_be_switched_off() {
    assert!(
        children("networkPolicy: {enabled: false}")
            .network_policies
            .is_empty()
    );
}

#[test]
fn network_policies_limit_who_reaches_the_servers() {
    let children = children("");
    let policy = |name: &str| {
        children
            .network_policies
            .iter()
            .find(|p| p.metadata.name.as_deref() == Some(name))
            .unwrap()
            .spec
            .clone()
            .unwrap()
    };
    let sources = |name: &str| -> Option<Vec<String>> {
        let rule = &policy(name).ingress.unwrap()[0];
        rule.from.as_ref().map(|peers| {
            peers
                .iter()
                .map(|p| {
                    p.pod_selector
                        .as_ref()
                        .unwrap()
                        .match_labels
                        .as_ref()
                        .unwrap()["app.kubernetes.io/name"]
                        .clone()
                })
                .collect()
        })
    };
    assert_eq!(
        sources("shop-rabbitmq"),
        Some(vec!["payments-api".into(), "risk-engine".into()])
    );
    assert_eq!(
        sources("shop-postgresql"),
        Some(vec!["payments-api".into()])
    );
    assert_eq!(sources("shop-payments-api"), None, "open to every client");
    let port = |name: &str| {
        policy(name).ingress.unwrap()[0].ports.as_ref().unwrap()[0]
            .port
            .clone()
    };
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    assert_eq!(port("shop-payments-api"), Some(IntOrString::Int(5000)));
    assert_eq!(port("shop-postgresql"), Some(IntOrString::Int(5432)));
    assert_eq!(port("shop-rabbitmq"), Some(IntOrString::Int(5672)));
}

#[test]
fn generated_secrets_hold_what_their_users_read() {
    let ps = system("");
    let data = secrets_for(&ps, &[]);
    let key = String::from_utf8(data["shop-api-key"]["api-key"].0.clone()).unwrap();
    let file = String::from_utf8(data["shop-api-key"]["api-keys"].0.clone()).unwrap();
    assert_eq!(file, format!("default={key}\n"));
    let url = String::from_utf8(data["shop-postgresql-credentials"]["url"].0.clone()).unwrap();
    assert!(
        url.starts_with("postgres://paysys:")
            && url.ends_with("@shop-postgresql.payments.svc:5432/paysys"),
        "{url}"
    );
    let url = String::from_utf8(data["shop-rabbitmq-credentials"]["url"].0.clone()).unwrap();
    assert!(
        url.starts_with("amqp://paysys:") && url.ends_with("@shop-rabbitmq.payments.svc:5672/%2f"),
        "{url}"
    );
    // Fresh randomness every time a template is generated.
    let a = paysys_operator::build::secrets::generate(
        &ps,
        paysys_operator::names::GeneratedSecret::ApiKey,
    );
    let b = paysys_operator::build::secrets::generate(
        &ps,
        paysys_operator::names::GeneratedSecret::ApiKey,
    );
    assert_ne!(
        a.data.as_ref().unwrap()["api-key"],
        b.data.as_ref().unwrap()["api-key"]
    );
    assert_eq!(a.data.as_ref().unwrap()["api-key"].0.len(), 64);
}
