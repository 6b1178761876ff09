//! Pure builder tests: from small YAML resources to the child objects.

mod common;

use common::{secrets_for, system, validated};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Container, EnvVar, PodSpec};
use paysys_core::risk_rules::RiskRules;
use paysys_operator::build::meta::CONFIG_HASH;
use paysys_operator::build::{Children, build};
use paysys_operator::observe::models::{LiveEngine, ModelStore};
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
    // Safe by default: each managed server keeps its data on a claim.
    assert_eq!(
        names(&children.persistent_volume_claims),
        ["shop-rabbitmq-data", "shop-postgresql-data"]
    );
    assert!(children.horizontal_pod_autoscalers.is_empty());
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

/// Every kind in the list of child kinds (operator/src/build/mod.rs) is built by some spec:
/// a kind listed (and so applied, pruned, watched and granted) but never built fails here.
#[test]
fn every_listed_child_kind_is_built() {
    let managed = children(
        "paymentsApi:\n  autoscaling: {maxReplicas: 4}\nrabbitmq:\n  managed:\n    storage: {size: 2Gi}\ndatabase:\n  managed:\n    storage: {size: 2Gi}\ndataFeed: {}\n",
    );
    // The kinds of other operators (CloudNativePG, RabbitMQ Cluster Operator, Prometheus
    // Operator).
    let operated = children(
        "rabbitmq: {clusterOperator: {}}\ndatabase: {cloudNativePG: {}}\nmonitoring: {serviceMonitor: {}}\n",
    );
    // A model from a Secret (its copy is a Secret).
    let model = children_with_model("riskEngine:\n  model: {secret: {name: risk-secret}}\n");
    let built: std::collections::BTreeSet<String> = managed
        .metas()
        .into_iter()
        .chain(operated.metas())
        .chain(model.metas())
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
    // ConfigMap, 2 claims, 3 Services, 4 Deployments, 1 budget, 4 NetworkPolicies.
    assert_eq!(metas.len(), 1 + 2 + 3 + 4 + 1 + 4);
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

/// A workload's name and its pods' user, group and fsGroup.
type Ids = (String, Option<i64>, Option<i64>, Option<i64>);

/// The pods' user, group and fsGroup of every Deployment and of the data feed's CronJob.
fn pod_ids(children: &Children) -> Vec<Ids> {
    let deployments = children
        .deployments
        .iter()
        .map(|deployment| (deployment.metadata.name.clone().unwrap(), pod(deployment)));
    let cron_jobs = children.cron_jobs.iter().map(|cron_job| {
        let pod = cron_job.spec.job_template.spec.as_ref().unwrap();
        (
            cron_job.metadata.name.clone().unwrap(),
            pod.template.spec.as_ref().unwrap(),
        )
    });
    deployments
        .chain(cron_jobs)
        .map(|(name, pod)| {
            let security = pod.security_context.as_ref().unwrap();
            // Whatever the ids, never root and the default seccomp profile.
            assert_eq!(security.run_as_non_root, Some(true), "{name}");
            assert_eq!(
                security.seccomp_profile.as_ref().unwrap().type_,
                "RuntimeDefault",
                "{name}"
            );
            for container in &pod.containers {
                let container = container.security_context.as_ref().unwrap();
                assert_eq!(container.run_as_user, None, "{name}: ids only at pod level");
                assert_eq!(container.read_only_root_filesystem, Some(true), "{name}");
                assert_eq!(container.allow_privilege_escalation, Some(false), "{name}");
            }
            (
                name,
                security.run_as_user,
                security.run_as_group,
                security.fs_group,
            )
        })
        .collect()
}

const WITH_FEED: &str = "dataFeed: {schedule: \"@daily\"}";

#[test]
fn pods_run_as_their_images_users_by_default() {
    let ids = pod_ids(&children(WITH_FEED));
    let expected = [
        ("shop-rabbitmq", 999),
        ("shop-postgresql", 70),
        ("shop-payments-api", 65532),
        ("shop-risk-engine", 65532),
        ("shop-data-feed", 65532),
    ];
    assert_eq!(ids.len(), expected.len(), "{ids:?}");
    for (name, id) in expected {
        assert!(
            ids.contains(&(name.to_string(), Some(id), Some(id), Some(id))),
            "{name} runs as {id}: {ids:?}"
        );
    }
}

#[test]
fn fixed_ids_from_the_spec_replace_every_images_own() {
    let ids = pod_ids(&children(&format!(
        "{WITH_FEED}\nsecurityContext: {{runAsUser: 1001, runAsGroup: 2002}}"
    )));
    assert_eq!(ids.len(), 5);
    for (name, user, group, fs_group) in &ids {
        // The group also owns the volumes when no fsGroup is given.
        assert_eq!(
            (*user, *group, *fs_group),
            (Some(1001), Some(2002), Some(2002)),
            "{name}"
        );
    }
    let ids = pod_ids(&children("securityContext: {fsGroup: 3003}"));
    assert!(
        ids.iter()
            .all(|(_, _, _, fs_group)| *fs_group == Some(3003)),
        "{ids:?}"
    );
    assert!(ids.contains(&("shop-postgresql".into(), Some(70), Some(70), Some(3003))));
}

#[test]
fn openshift_restricted_mode_sets_no_ids_anywhere() {
    let ids = pod_ids(&children(&format!(
        "{WITH_FEED}\nsecurityContext: {{mode: OpenShiftRestricted}}"
    )));
    assert_eq!(ids.len(), 5);
    for (name, user, group, fs_group) in &ids {
        assert_eq!((*user, *group, *fs_group), (None, None, None), "{name}");
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
    let generated: Vec<String> = paysys_operator::observe::secrets::generated_secrets(&ps)
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
        ["shop-rabbitmq-data", "shop-postgresql-data"]
    );
    let claim = children.persistent_volume_claims[1].spec.as_ref().unwrap();
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
    // Without storage: the default 1Gi claim, on the cluster's default StorageClass.
    let rabbit = deployment(&children, "shop-rabbitmq");
    assert_eq!(
        data_volume(rabbit)
            .persistent_volume_claim
            .as_ref()
            .unwrap()
            .claim_name,
        "shop-rabbitmq-data"
    );
    let claim = children
        .persistent_volume_claims
        .iter()
        .find(|c| c.metadata.name.as_deref() == Some("shop-rabbitmq-data"))
        .unwrap()
        .spec
        .as_ref()
        .unwrap();
    assert_eq!(claim.storage_class_name, None);
    assert_eq!(
        claim.resources.as_ref().unwrap().requests.as_ref().unwrap()["storage"].0,
        "1Gi"
    );
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
        paysys_operator::observe::secrets::generated_secrets(&ps)
            .iter()
            .all(|(_, n)| n != "shop-api-key")
    );
}

#[test]
fn a_jwks_url_replaces_the_public_key_file() {
    let ps = system(
        "paymentsApi:\n  auth:\n    secretName: shop-auth\n    jwt: {algorithm: ES256, jwksUrl: \"https://idp.example.com/.well-known/openid-configuration\"}",
    );
    // No jwt-public-key.pem is needed; one that is there anyway is not mounted.
    let user: &[(&str, &[(&str, &str)])] = &[(
        "shop-auth",
        &[
            ("api-keys", "a=bbbbbbbbbbbbbbbbbbbbbb"),
            ("jwt-public-key.pem", "unused"),
        ],
    )];
    let children = build(&validated(&ps, user));
    let deployment = deployment(&children, "shop-payments-api");
    let api = container(deployment);
    assert_eq!(env_value(api, "JWT_ALGORITHM").as_deref(), Some("ES256"));
    assert_eq!(
        env_value(api, "JWT_JWKS_URL").as_deref(),
        Some("https://idp.example.com/.well-known/openid-configuration")
    );
    assert!(env(api, "JWT_PUBLIC_KEY_FILE").is_none());
    assert!(env(api, "API_KEYS_FILE").is_some());
    let mounted: Vec<String> = pod(deployment)
        .volumes
        .iter()
        .flatten()
        .filter_map(|volume| volume.secret.as_ref())
        .flat_map(|secret| secret.items.iter().flatten().map(|item| item.key.clone()))
        .collect();
    assert!(mounted.contains(&"api-keys".to_owned()), "{mounted:?}");
    assert!(
        !mounted.contains(&"jwt-public-key.pem".to_owned()),
        "{mounted:?}"
    );

    // HS256 has no JWKS: refused before anything is built (the CRD's CEL refuses it too).
    let ps = system(
        "paymentsApi:\n  auth:\n    secretName: shop-auth\n    jwt: {algorithm: HS256, jwksUrl: \"https://idp.example.com/jwks\"}",
    );
    let error = validate::check(&ps).unwrap_err();
    assert_eq!(error.reason(), "InvalidSpec");
    assert!(error.to_string().contains("jwksUrl"), "{error}");
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
        (
            "securityContext: {mode: OpenShiftRestricted, fsGroup: 5}",
            "drop securityContext.fsGroup",
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

fn data_volume(deployment: &Deployment) -> &k8s_openapi::api::core::v1::Volume {
    pod(deployment)
        .volumes
        .as_ref()
        .unwrap()
        .iter()
        .find(|v| v.name == "data")
        .unwrap()
}

#[test]
fn ephemeral_storage_is_an_explicit_choice_and_keeps_no_claim() {
    let children = children(
        "rabbitmq:\n  managed:\n    storage: {ephemeral: true}\ndatabase:\n  managed:\n    storage: {ephemeral: true, size: 5Gi}\n",
    );
    assert!(children.persistent_volume_claims.is_empty());
    for name in ["shop-rabbitmq", "shop-postgresql"] {
        assert!(
            data_volume(deployment(&children, name)).empty_dir.is_some(),
            "{name}"
        );
    }
    let ps =
        system("database:\n  managed:\n    storage: {ephemeral: true, storageClassName: fast}");
    let error = validate::validate(&ps, &secrets_for(&ps, &[])).unwrap_err();
    assert!(error.to_string().contains("storage.ephemeral"), "{error}");
}

/// A server created on the emptyDir default of 0.1.0 keeps it while its spec sets no
/// storage (a claim would replace the pod and lose the data); any explicit storage wins.
#[test]
fn a_server_already_on_an_empty_dir_keeps_it_until_storage_is_set() {
    use paysys_operator::names::Server;
    use paysys_operator::validate::{Ephemeral, Storage};
    let ps = system("");
    let system_ =
        validate::validate_observed(&ps, &secrets_for(&ps, &[]), &[Server::Postgres]).unwrap();
    let storages: Vec<&Storage> = system_.managed_servers().map(|s| &s.storage).collect();
    assert_eq!(
        storages,
        [
            &Storage::Claim {
                size: "1Gi".into(),
                class: None
            },
            &Storage::Ephemeral(Ephemeral::Legacy)
        ]
    );
    let children = build(&system_);
    assert_eq!(
        names(&children.persistent_volume_claims),
        ["shop-rabbitmq-data"]
    );
    assert!(
        data_volume(deployment(&children, "shop-postgresql"))
            .empty_dir
            .is_some()
    );

    let ps = system("database:\n  managed:\n    storage: {size: 5Gi}");
    let system_ =
        validate::validate_observed(&ps, &secrets_for(&ps, &[]), &[Server::Postgres]).unwrap();
    let children = build(&system_);
    assert_eq!(
        names(&children.persistent_volume_claims),
        ["shop-rabbitmq-data", "shop-postgresql-data"]
    );
}

#[test]
fn autoscaling_builds_an_hpa_and_leaves_replicas_to_it() {
    let children = children(
        "paymentsApi:\n  replicas: 5\n  autoscaling: {minReplicas: 3, maxReplicas: 9, targetCPUUtilizationPercentage: 60}\n",
    );
    assert_eq!(
        names(&children.horizontal_pod_autoscalers),
        ["shop-payments-api"]
    );
    let hpa = &children.horizontal_pod_autoscalers[0].spec;
    assert_eq!(hpa.scale_target_ref.kind, "Deployment");
    assert_eq!(hpa.scale_target_ref.name, "shop-payments-api");
    assert_eq!(hpa.min_replicas, Some(3));
    assert_eq!(hpa.max_replicas, 9);
    let metric = &hpa.metrics.as_ref().unwrap()[0];
    let resource = metric.resource.as_ref().unwrap();
    assert_eq!(resource.name, "cpu");
    assert_eq!(resource.target.type_, "Utilization");
    assert_eq!(resource.target.average_utilization, Some(60));
    // The operator writes no replica count for the autoscaled service, and its apply body
    // has no `replicas` field at all (so it never owns it).
    let api = deployment(&children, "shop-payments-api");
    assert_eq!(api.spec.replicas, None);
    let body = serde_json::to_value(api).unwrap();
    assert!(body["spec"].get("replicas").is_none(), "{}", body["spec"]);
    assert_eq!(
        deployment(&children, "shop-risk-engine").spec.replicas,
        Some(1)
    );
}

#[test]
fn disruption_budgets_follow_min_replicas() {
    // minReplicas 1: the autoscaler may run one pod, which a budget would pin during drains.
    let budgets =
        children("paymentsApi:\n  replicas: 4\n  autoscaling: {minReplicas: 1, maxReplicas: 4}\n");
    assert!(budgets.pod_disruption_budgets.is_empty());
    // minReplicas 2 on a service whose `replicas` alone would get none.
    let budgets =
        children("riskEngine:\n  replicas: 1\n  autoscaling: {minReplicas: 2, maxReplicas: 4}\n");
    assert_eq!(
        names(&budgets.pod_disruption_budgets),
        ["shop-payments-api", "shop-risk-engine"]
    );
}

#[test]
fn autoscaling_is_checked_by_the_operator_too() {
    for (spec, message) in [
        (
            "paymentsApi:\n  autoscaling: {minReplicas: 5, maxReplicas: 2}",
            "paymentsApi.autoscaling.minReplicas must be <= paymentsApi.autoscaling.maxReplicas",
        ),
        (
            "riskEngine:\n  autoscaling: {minReplicas: 0, maxReplicas: 2}",
            "riskEngine.autoscaling.minReplicas must be >= 1",
        ),
        (
            "riskEngine:\n  autoscaling: {maxReplicas: 2, targetCPUUtilizationPercentage: 101}",
            "riskEngine.autoscaling.targetCPUUtilizationPercentage must be between 1 and 100",
        ),
        (
            "paymentsApi:\n  autoscaling: {maxReplicas: 4}\n  resources:\n    requests: {memory: 128Mi}",
            "paymentsApi.resources requests no cpu",
        ),
    ] {
        let ps = system(spec);
        let error = validate::validate(&ps, &secrets_for(&ps, &[])).unwrap_err();
        assert!(error.to_string().contains(message), "{spec}: {error}");
    }
}

const MODEL_CARD: &str =
    include_str!("../../services/risk-engine/tests/fixtures/model/model-card.json");
const MODEL_TEXT: &str = include_str!("../../services/risk-engine/tests/fixtures/model/model.txt");

/// ConfigMap `risk-model` and Secret `risk-secret`, each holding the fixture model.
fn model_files() -> paysys_operator::observe::ModelFiles {
    let model: std::collections::BTreeMap<String, Vec<u8>> =
        [("model-card.json", MODEL_CARD), ("model.txt", MODEL_TEXT)]
            .into_iter()
            .map(|(key, value)| (key.to_owned(), value.as_bytes().to_vec()))
            .collect();
    paysys_operator::observe::ModelFiles::from([
        (
            (ModelStore::ConfigMap, "risk-model".to_owned()),
            model.clone(),
        ),
        ((ModelStore::Secret, "risk-secret".to_owned()), model),
    ])
}

/// The system `spec` resolved with [`model_files`] and the live risk engine template `live`.
fn validated_with_model(spec: &str, live: &LiveEngine) -> validate::Validated {
    let ps = system(spec);
    validate::validate_with_models(&ps, &secrets_for(&ps, &[]), &model_files(), &[], live).unwrap()
}

/// Children of `spec` with ConfigMap `risk-model` and Secret `risk-secret` holding the
/// fixture model.
fn children_with_model(spec: &str) -> Children {
    build(&validated_with_model(spec, &LiveEngine::default()))
}

fn annotation(deployment: &Deployment, key: &str) -> Option<String> {
    deployment
        .spec
        .template
        .metadata
        .as_ref()?
        .annotations
        .as_ref()?
        .get(key)
        .cloned()
}

#[test]
fn a_config_map_model_is_mounted_from_an_immutable_copy_with_its_version_on_the_template() {
    let version = serde_json::from_str::<serde_json::Value>(MODEL_CARD).unwrap()["model_version"]
        .as_str()
        .unwrap()
        .to_owned();
    let children = children_with_model(
        "riskEngine:\n  mode: model\n  model:\n    configMap: {name: risk-model}\n    shadow:\n      persistentVolumeClaim: {claimName: models, subPath: m2, version: m-2}\n",
    );
    let copies: Vec<_> = children
        .config_maps
        .iter()
        .filter(|c| c.metadata.name.as_deref() != Some("shop-risk-rules"))
        .collect();
    assert_eq!(copies.len(), 1, "one copy: the shadow is on a claim");
    let copy = copies[0];
    let copy_name = copy.metadata.name.clone().unwrap();
    assert!(copy_name.starts_with("shop-model-"), "{copy_name}");
    assert_eq!(copy.immutable, Some(true));
    assert_eq!(copy.data.as_ref().unwrap()["model.txt"], MODEL_TEXT);
    let risk = deployment(&children, "shop-risk-engine");
    assert_eq!(annotation(risk, "paysys.io/model-version"), Some(version));
    assert_eq!(
        annotation(risk, "paysys.io/shadow-model-version").as_deref(),
        Some("m-2")
    );
    let engine = container(risk);
    assert_eq!(env_value(engine, "RISK_MODE").as_deref(), Some("model"));
    assert_eq!(
        env_value(engine, "MODEL_DIR").as_deref(),
        Some("/etc/paysys/model")
    );
    assert!(
        env(engine, "MODEL_VERSION").is_none(),
        "checked by the operator"
    );
    assert_eq!(
        env_value(engine, "SHADOW_MODEL_DIR").as_deref(),
        Some("/etc/paysys/shadow-model")
    );
    assert_eq!(
        env_value(engine, "SHADOW_MODEL_VERSION").as_deref(),
        Some("m-2")
    );
    let volumes = pod(risk).volumes.as_ref().unwrap();
    let model = volumes.iter().find(|v| v.name == "model").unwrap();
    assert_eq!(model.config_map.as_ref().unwrap().name, copy_name);
    let shadow = volumes.iter().find(|v| v.name == "shadow-model").unwrap();
    let claim = shadow.persistent_volume_claim.as_ref().unwrap();
    assert_eq!(
        (claim.claim_name.as_str(), claim.read_only),
        ("models", Some(true))
    );
    let mounts = engine.volume_mounts.as_ref().unwrap();
    let shadow_mount = mounts.iter().find(|m| m.name == "shadow-model").unwrap();
    assert_eq!(shadow_mount.sub_path.as_deref(), Some("m2"));
    assert!(mounts.iter().all(|m| m.read_only == Some(true)));
    // Rolled with surge and nothing unavailable: a refused pod never replaces a serving one.
    let strategy = risk.spec.strategy.as_ref().unwrap();
    let rolling = strategy.rolling_update.as_ref().unwrap();
    assert_eq!(
        rolling.max_unavailable,
        Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(0))
    );
}

#[test]
fn a_secret_model_is_mounted_from_an_immutable_secret_copy() {
    let children = children_with_model(
        "riskEngine:\n  mode: model\n  model:\n    secret: {name: risk-secret}\n",
    );
    assert_eq!(
        children.config_maps.len(),
        1,
        "only the rules: {children:?}"
    );
    let [copy] = &children.secrets[..] else {
        panic!("one Secret copy: {:?}", children.secrets);
    };
    let copy_name = copy.metadata.name.clone().unwrap();
    assert!(copy_name.starts_with("shop-model-"), "{copy_name}");
    assert_eq!(copy.immutable, Some(true));
    assert_eq!(copy.type_.as_deref(), Some("Opaque"));
    let data = copy.data.as_ref().unwrap();
    assert_eq!(data["model.txt"].0, MODEL_TEXT.as_bytes());
    assert_eq!(data["model-card.json"].0, MODEL_CARD.as_bytes());
    let labels = copy.metadata.labels.as_ref().unwrap();
    assert_eq!(labels["app.kubernetes.io/managed-by"], "paysys-operator");
    assert_eq!(copy.metadata.owner_references.as_ref().unwrap().len(), 1);
    let risk = deployment(&children, "shop-risk-engine");
    let volumes = pod(risk).volumes.as_ref().unwrap();
    let model = volumes.iter().find(|v| v.name == "model").unwrap();
    let secret = model.secret.as_ref().unwrap();
    assert_eq!(secret.secret_name.as_deref(), Some(copy_name.as_str()));
    assert_eq!(secret.default_mode, Some(0o444));
    assert_eq!(
        env_value(container(risk), "MODEL_DIR").as_deref(),
        Some("/etc/paysys/model")
    );
    // The same model as challenger from the ConfigMap: one copy of each kind.
    let both = children_with_model(
        "riskEngine:\n  mode: model\n  model:\n    secret: {name: risk-secret}\n    shadow: {configMap: {name: risk-model}}\n",
    );
    assert_eq!((both.secrets.len(), both.config_maps.len()), (1, 2));
}

/// A refused model never reaches the pod template: the live one's model stays in its slot
/// while the rest of the spec is built; with no good model before, the live template is kept
/// as it is, and without a live Deployment none is built.
#[test]
fn a_refused_model_is_held_back_and_the_rest_is_built() {
    let good = validated_with_model(
        "paymentsApi: {logLevel: info}\nriskEngine:\n  mode: model\n  model: {secret: {name: risk-secret}}\n",
        &LiveEngine::default(),
    );
    let good_risk = paysys_operator::build::build(&good)
        .deployments
        .into_iter()
        .find(|d| d.metadata.name.as_deref() == Some("shop-risk-engine"))
        .unwrap();
    let live = LiveEngine::of(&good.names, Some(good_risk.spec.template.clone()));
    assert_eq!(live.copies.len(), 1);
    // The spec now names a missing Secret, and changes the API's and the engine's log level.
    let spec = "paymentsApi: {logLevel: debug}\nriskEngine:\n  mode: model\n  logLevel: debug\n  model: {secret: {name: gone}}\n";
    let held = validated_with_model(spec, &live);
    let held_back = held.risk_engine.held_back.as_ref().unwrap();
    assert_eq!(held_back.refusal.reason(), "ModelNotFound");
    let children = build(&held);
    assert!(children.secrets.is_empty(), "the kept copy exists already");
    let api = container(deployment(&children, "shop-payments-api"));
    assert_eq!(env_value(api, "RUST_LOG").as_deref(), Some("debug"));
    let risk = deployment(&children, "shop-risk-engine");
    assert_eq!(
        env_value(container(risk), "RUST_LOG").as_deref(),
        Some("debug")
    );
    let volumes = pod(risk).volumes.as_ref().unwrap();
    assert_eq!(
        volumes.iter().find(|v| v.name == "model"),
        good_risk
            .spec
            .template
            .spec
            .as_ref()
            .unwrap()
            .volumes
            .as_ref()
            .unwrap()
            .iter()
            .find(|v| v.name == "model")
    );
    assert_eq!(
        annotation(risk, "paysys.io/model-version"),
        annotation(&good_risk, "paysys.io/model-version")
    );

    // The first model refused: the rules-mode template stays as it is.
    let rules = build(&validated_with_model("", &LiveEngine::default()));
    let rules_risk = deployment(&rules, "shop-risk-engine").clone();
    let live = LiveEngine::of(&good.names, Some(rules_risk.spec.template.clone()));
    let children = build(&validated_with_model(spec, &live));
    let risk = deployment(&children, "shop-risk-engine");
    assert_eq!(risk.spec.template, rules_risk.spec.template);
    assert_eq!(
        env_value(
            container(deployment(&children, "shop-payments-api")),
            "RUST_LOG"
        )
        .as_deref(),
        Some("debug")
    );
    // No risk engine yet: none is built, the rest is.
    let children = build(&validated_with_model(spec, &LiveEngine::default()));
    assert!(
        children
            .deployments
            .iter()
            .all(|d| d.metadata.name.as_deref() != Some("shop-risk-engine"))
    );
    deployment(&children, "shop-payments-api");
}

#[test]
fn without_a_model_the_risk_engine_mounts_none() {
    let children = children("");
    let risk = deployment(&children, "shop-risk-engine");
    assert_eq!(annotation(risk, "paysys.io/model-version"), None);
    assert!(env(container(risk), "MODEL_DIR").is_none());
    assert_eq!(children.config_maps.len(), 1);
}
