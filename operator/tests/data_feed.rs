//! `spec.dataFeed`: validation, the generated Fernet key, and the CronJob and claim built from
//! it (pure: from small YAML resources to objects).

mod common;

use base64::Engine as _;
use common::{FERNET_KEY, secrets_for, system, validated};
use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::core::v1::{Container, PodSpec};
use paysys_operator::build::data_feed::{self, Built};
use paysys_operator::build::{build, secrets};
use paysys_operator::names::GeneratedSecret;
use paysys_operator::validate::{self, ValidationError};

fn feed(spec: &str, user: &[(&str, &[(&str, &str)])]) -> Built {
    let system = validated(&system(spec), user);
    let feed = system.data_feed.as_ref().expect("a data feed");
    data_feed::build(&system, feed)
}

fn pod(cron_job: &CronJob) -> &PodSpec {
    cron_job
        .spec
        .job_template
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap()
}

fn container(cron_job: &CronJob) -> &Container {
    &pod(cron_job).containers[0]
}

fn database_url_source(container: &Container) -> (String, String) {
    let selector = container
        .env
        .iter()
        .flatten()
        .find(|e| e.name == "DATABASE_URL")
        .and_then(|e| e.value_from.as_ref())
        .and_then(|v| v.secret_key_ref.as_ref())
        .expect("DATABASE_URL from a Secret");
    (selector.name.clone(), selector.key.clone())
}

#[test]
fn no_data_feed_builds_no_cron_job_and_generates_no_key() {
    let ps = system("");
    assert!(validated(&ps, &[]).data_feed.is_none());
    assert!(build(&validated(&ps, &[])).cron_jobs.is_empty());
    assert!(
        !paysys_operator::observe::secrets::generated_secrets(&ps)
            .iter()
            .any(|(secret, _)| *secret == GeneratedSecret::FeedKey)
    );
}

#[test]
fn an_empty_data_feed_exports_hourly_onto_a_claim_it_creates() {
    let built = feed("dataFeed: {}", &[]);
    let cron_job = &built.cron_job;
    assert_eq!(cron_job.metadata.name.as_deref(), Some("shop-data-feed"));
    assert_eq!(
        cron_job.metadata.labels.as_ref().unwrap()["app.kubernetes.io/managed-by"],
        "paysys-operator"
    );
    assert_eq!(
        cron_job.metadata.owner_references.as_ref().unwrap()[0].kind,
        "PaymentSystem"
    );
    let spec = &cron_job.spec;
    assert_eq!(spec.schedule, "@hourly");
    assert_eq!(spec.time_zone.as_deref(), Some("Etc/UTC"));
    assert_eq!(spec.concurrency_policy.as_deref(), Some("Forbid"));
    assert_eq!(spec.suspend, Some(false));
    let container = container(cron_job);
    assert_eq!(
        container.image.as_deref(),
        Some(concat!(
            "ghcr.io/paysys/paysys-feed:",
            env!("CARGO_PKG_VERSION")
        ))
    );
    assert_eq!(
        container.args.as_deref().unwrap(),
        [
            "export",
            "--out",
            "/feed",
            "--key-file",
            "/etc/paysys/feed-key/fernet-key"
        ]
    );
    // The same database URL, from the same Secret, as the payments API.
    assert_eq!(
        database_url_source(container),
        ("shop-postgresql-credentials".into(), "url".into())
    );
    let claim = built.claim.as_ref().expect("a claim");
    assert_eq!(claim.metadata.name.as_deref(), Some("shop-data-feed-data"));
    let claim_spec = claim.spec.as_ref().unwrap();
    assert_eq!(
        claim_spec.access_modes.as_deref(),
        Some(&["ReadWriteOnce".to_string()][..])
    );
    assert_eq!(
        claim_spec
            .resources
            .as_ref()
            .unwrap()
            .requests
            .as_ref()
            .unwrap()["storage"]
            .0,
        "1Gi"
    );
    let pod = pod(cron_job);
    let volume = |name: &str| {
        pod.volumes
            .iter()
            .flatten()
            .find(|v| v.name == name)
            .unwrap_or_else(|| panic!("no volume {name}"))
            .clone()
    };
    assert_eq!(
        volume("feed")
            .persistent_volume_claim
            .map(|claim| claim.claim_name),
        Some("shop-data-feed-data".into())
    );
    let key = volume("key").secret.unwrap();
    assert_eq!(key.secret_name.as_deref(), Some("shop-feed-key"));
    let items = key.items.unwrap();
    assert_eq!(
        (items[0].key.as_str(), items[0].path.as_str()),
        ("fernet-key", "fernet-key")
    );
    assert!(volume("tmp").empty_dir.is_some());
}

#[test]
fn the_export_pod_is_locked_down_and_writes_only_to_its_volumes() {
    let built = feed("dataFeed: {}", &[]);
    let pod = pod(&built.cron_job);
    assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
    assert_eq!(pod.automount_service_account_token, Some(false));
    let security = pod.security_context.as_ref().unwrap();
    assert_eq!(security.run_as_non_root, Some(true));
    assert_eq!(security.run_as_user, Some(65532));
    // The claim is group-writable for the non-root user.
    assert_eq!(security.fs_group, Some(65532));
    let container = container(&built.cron_job);
    let security = container.security_context.as_ref().unwrap();
    assert_eq!(security.read_only_root_filesystem, Some(true));
    assert_eq!(security.allow_privilege_escalation, Some(false));
    assert_eq!(
        security.capabilities.as_ref().unwrap().drop.as_deref(),
        Some(&["ALL".to_string()][..])
    );
    let writable: Vec<&str> = container
        .volume_mounts
        .iter()
        .flatten()
        .filter(|m| m.read_only != Some(true))
        .map(|m| m.mount_path.as_str())
        .collect();
    assert_eq!(writable, ["/feed", "/tmp"]);
    let limits = container
        .resources
        .as_ref()
        .unwrap()
        .limits
        .as_ref()
        .unwrap();
    assert_eq!(limits["memory"].0, "512Mi");
    // The Job's pods carry the selector labels the database's NetworkPolicy admits.
    let labels = built
        .cron_job
        .spec
        .job_template
        .spec
        .as_ref()
        .unwrap()
        .template
        .metadata
        .as_ref()
        .unwrap()
        .labels
        .as_ref()
        .unwrap();
    assert_eq!(labels["app.kubernetes.io/name"], "data-feed");
    assert_eq!(labels["app.kubernetes.io/instance"], "shop");
}

#[test]
fn every_field_reaches_the_cron_job() {
    let spec = "\
database:
  external: {secretName: shop-db, key: dsn}
dataFeed:
  schedule: \"15 2 * * MON-FRI\"
  destination: {existingClaim: lake}
  keySecret: {secretName: shop-feed, key: key}
  retentionDays: 30
  suspend: true
  image: registry.example.com/feed:1.2.3
  resources:
    limits: {memory: 1Gi}";
    let user_key = FERNET_KEY;
    let built = feed(
        spec,
        &[
            ("shop-db", &[("dsn", "postgres://u:p@db/paysys")]),
            ("shop-feed", &[("key", user_key)]),
        ],
    );
    assert!(built.claim.is_none(), "an existing claim is not created");
    let spec = &built.cron_job.spec;
    assert_eq!(spec.schedule, "15 2 * * MON-FRI");
    assert_eq!(spec.suspend, Some(true));
    let container = container(&built.cron_job);
    assert_eq!(
        container.image.as_deref(),
        Some("registry.example.com/feed:1.2.3")
    );
    assert_eq!(
        container.args.as_deref().unwrap()[5..],
        ["--retain-days", "30"]
    );
    assert_eq!(
        database_url_source(container),
        ("shop-db".into(), "dsn".into())
    );
    assert_eq!(
        container
            .resources
            .as_ref()
            .unwrap()
            .limits
            .as_ref()
            .unwrap()["memory"]
            .0,
        "1Gi"
    );
    let pod = pod(&built.cron_job);
    let volumes = pod.volumes.as_ref().unwrap();
    let claim = volumes
        .iter()
        .find_map(|v| v.persistent_volume_claim.as_ref())
        .unwrap();
    assert_eq!(claim.claim_name, "lake");
    let key = volumes.iter().find_map(|v| v.secret.as_ref()).unwrap();
    assert_eq!(key.secret_name.as_deref(), Some("shop-feed"));
    let item = &key.items.as_ref().unwrap()[0];
    assert_eq!(
        (item.key.as_str(), item.path.as_str()),
        ("key", "fernet-key")
    );
    // A user's key is read, never generated.
    let ps = system(spec_with_user_key());
    assert!(
        !paysys_operator::observe::secrets::generated_secrets(&ps)
            .iter()
            .any(|(secret, _)| *secret == GeneratedSecret::FeedKey)
    );
    assert!(
        paysys_operator::observe::secrets::referenced_secrets(&ps)
            .contains(&"shop-feed".to_string())
    );
}

fn spec_with_user_key() -> &'static str {
    "dataFeed:\n  keySecret: {secretName: shop-feed}"
}

#[test]
fn the_generated_key_is_a_fresh_fernet_key_made_once() {
    let ps = system("dataFeed: {}");
    assert!(
        paysys_operator::observe::secrets::generated_secrets(&ps)
            .contains(&(GeneratedSecret::FeedKey, "shop-feed-key".to_string()))
    );
    let key_of = |secret: k8s_openapi::api::core::v1::Secret| {
        let data = secret.data.unwrap();
        assert_eq!(data.keys().collect::<Vec<_>>(), ["fernet-key"]);
        String::from_utf8(data["fernet-key"].0.clone()).unwrap()
    };
    let a = key_of(secrets::generate(&ps, GeneratedSecret::FeedKey));
    let b = key_of(secrets::generate(&ps, GeneratedSecret::FeedKey));
    assert_ne!(a, b, "fresh randomness");
    for key in [&a, &b] {
        assert_eq!(key.len(), 44, "{key}");
        let bytes = base64::engine::general_purpose::URL_SAFE
            .decode(key)
            .unwrap();
        assert_eq!(bytes.len(), 32);
    }
    // What the cluster holds is what validation accepts.
    let system = validate::validate(&ps, &secrets_for(&ps, &[])).unwrap();
    let feed = system.data_feed.unwrap();
    assert_eq!(
        (feed.key_secret.as_str(), feed.key.as_str()),
        ("shop-feed-key", "fernet-key")
    );
}

#[test]
fn a_key_secret_that_is_missing_or_not_a_fernet_key_is_reported() {
    let ps = system(spec_with_user_key());
    assert_eq!(
        validate::validate(&ps, &secrets_for(&ps, &[])).unwrap_err(),
        ValidationError::SecretNotFound("shop-feed".into())
    );
    let error = validate::validate(
        &ps,
        &secrets_for(&ps, &[("shop-feed", &[("other", FERNET_KEY)])]),
    )
    .unwrap_err();
    assert_eq!(error.reason(), "SecretKeyMissing");
    for bad in [
        "hunter2",
        "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNk",
        "MDEy MzQ1",
    ] {
        let error = validate::validate(
            &ps,
            &secrets_for(&ps, &[("shop-feed", &[("fernet-key", bad)])]),
        )
        .unwrap_err();
        assert_eq!(error.reason(), "SecretKeyInvalid", "{bad}");
        let message = error.to_string();
        assert!(message.contains("not a Fernet key"), "{message}");
        assert!(!message.contains(bad), "the key is never echoed: {message}");
    }
    // `paysys-feed keygen > file` leaves a newline: accepted, as the export accepts it.
    let with_newline = format!("{FERNET_KEY}\n");
    validate::validate(
        &ps,
        &secrets_for(&ps, &[("shop-feed", &[("fernet-key", &with_newline)])]),
    )
    .expect("a key with a trailing newline");
}

#[test]
fn invalid_data_feeds_are_refused_before_anything_is_built() {
    for (spec, needle) in [
        ("dataFeed: {schedule: \"61 * * * *\"}", "dataFeed.schedule"),
        ("dataFeed: {schedule: \"@every 5m\"}", "dataFeed.schedule"),
        ("dataFeed: {retentionDays: 0}", "retentionDays"),
        (
            "dataFeed:\n  destination: {existingClaim: lake, claim: {size: 1Gi}}",
            "exactly one of claim or existingClaim",
        ),
        (
            "dataFeed:\n  destination: {}",
            "exactly one of claim or existingClaim",
        ),
        (
            "dataFeed:\n  destination: {existingClaim: \"\"}",
            "existingClaim must not be empty",
        ),
        (
            "dataFeed:\n  destination: {claim: {ephemeral: true}}",
            "claim cannot be ephemeral",
        ),
    ] {
        let error = validate::check(&system(spec)).unwrap_err();
        assert!(error.to_string().contains(needle), "{spec}: {error}");
        assert_eq!(error.reason(), "InvalidSpec");
    }
}

#[test]
fn a_name_too_long_for_a_cron_job_is_refused_only_with_a_data_feed() {
    let mut ps = system("dataFeed: {}");
    ps.metadata.name = Some("a".repeat(43));
    let error = validate::check(&ps).unwrap_err();
    assert!(error.to_string().contains("42 characters"), "{error}");
    ps.metadata.name = Some("a".repeat(42));
    validate::check(&ps).expect("42 characters fit");
    ps.spec.data_feed = None;
    ps.metadata.name = Some("a".repeat(50));
    validate::check(&ps).expect("no CronJob, no limit of its own");
}

#[test]
fn schedules_are_checked_against_cron_ranges() {
    for good in [
        "@hourly",
        "@daily",
        "@midnight",
        "@weekly",
        "@monthly",
        "@yearly",
        "@annually",
        "15 * * * *",
        "*/15 * * * *",
        "0 2 * * *",
        "0 0 1 1 *",
        "0 0 ? * MON",
        "0 0 * JAN-MAR sun",
        "0,30 8-18/2 1-31 1-12 0-6",
        "59 23 31 12 6",
        "? * * * *",
        "0  3 * * *",
    ] {
        assert!(validate::is_schedule(good), "{good}");
    }
    for bad in [
        "",
        "hourly",
        "@every 5m",
        "* * * *",
        "* * * * * *",
        "60 * * * *",
        "* 24 * * *",
        "* * 0 * *",
        "* * 32 * *",
        "* * * 13 *",
        "* * * * 7",
        "*/0 * * * *",
        "5-1 * * * *",
        "0 0 * FOO *",
        "0 0 * * MON-",
        " 0 0 * * *",
        "0,,5 * * * *",
        "TZ=UTC 0 0 * * *",
    ] {
        assert!(!validate::is_schedule(bad), "{bad:?}");
    }
}

#[test]
fn the_database_policy_admits_the_export_only_with_a_data_feed() {
    let sources = |spec: &str| -> Vec<String> {
        let children = build(&validated(&system(spec), &[]));
        let policy = children
            .network_policies
            .iter()
            .find(|p| p.metadata.name.as_deref() == Some("shop-postgresql"))
            .unwrap();
        policy.spec.as_ref().unwrap().ingress.as_ref().unwrap()[0]
            .from
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
            .collect()
    };
    assert_eq!(sources(""), ["payments-api"]);
    assert_eq!(sources("dataFeed: {}"), ["payments-api", "data-feed"]);
}

/// With CloudNativePG the export reads the database from the Secret and key the payments API
/// uses in that mode (the `Cluster`'s generated app Secret), not a managed server's Secret.
#[test]
fn with_cloud_native_pg_the_export_reads_the_operators_app_secret() {
    let ps = system("database: {cloudNativePG: {}}\ndataFeed: {}");
    let system = validated(&ps, &[]);
    let children = build(&system);
    let api = children
        .deployments
        .iter()
        .find(|d| d.metadata.name.as_deref() == Some("shop-payments-api"))
        .unwrap();
    let api_source = database_url_source(&api.spec.template.spec.as_ref().unwrap().containers[0]);
    assert_eq!(api_source, ("shop-pg-app".to_string(), "uri".to_string()));
    assert_eq!(
        database_url_source(container(&children.cron_jobs[0])),
        api_source
    );
}
