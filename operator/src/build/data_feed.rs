//! The data feed: a CronJob running `paysys-feed export` against the payments API's database,
//! and the PersistentVolumeClaim it writes to when the operator creates one.
//!
//! The export is incremental (its watermark lives beside the files), so runs must never
//! overlap: `concurrencyPolicy: Forbid`. The schedule is read in UTC whatever the
//! controller-manager's zone, because the export's day partitions are UTC days too.

use k8s_openapi::api::batch::v1::{CronJob, CronJobSpec, JobSpec, JobTemplateSpec};
use k8s_openapi::api::core::v1::{
    KeyToPath, PersistentVolumeClaim, PersistentVolumeClaimVolumeSource, PodTemplateSpec,
    SecretVolumeSource, Volume,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::managed;
use super::meta;
use super::pod::{self, SERVICE_UID};
use crate::names::Component;
use crate::validate::{DataFeed, Validated};

/// Where the files go inside the export's pod.
pub const FEED_DIR: &str = "/feed";
/// Where the Fernet key Secret is mounted.
pub const KEY_DIR: &str = "/etc/paysys/feed-key";
/// File name of the key inside [`KEY_DIR`], whatever its key in the Secret.
pub const KEY_FILE: &str = "fernet-key";
/// A run that cannot start within this long after its time is skipped, not started late (and
/// a controller that was down for days does not count hundreds of missed runs).
pub const STARTING_DEADLINE_SECONDS: i64 = 600;
/// Finished Jobs kept for `kubectl logs`, each way.
pub const HISTORY: i32 = 3;
/// Retries of a failed export within one run (each starts from the same watermark).
pub const BACKOFF_LIMIT: i32 = 2;

/// The feed's objects: the CronJob, and the claim when the operator creates it.
pub struct Built {
    pub cron_job: CronJob,
    pub claim: Option<PersistentVolumeClaim>,
}

pub fn build(system: &Validated, feed: &DataFeed) -> Built {
    let component = Component::DataFeed;
    Built {
        cron_job: cron_job(system, feed),
        claim: feed.created_claim.as_ref().map(|storage| {
            managed::claim(
                system,
                component,
                system.names.feed_claim(),
                &storage.size,
                &storage.storage_class_name,
            )
        }),
    }
}

/// `paysys-feed export`'s command line (the image's entrypoint is the binary).
pub fn args(feed: &DataFeed) -> Vec<String> {
    let mut args = vec![
        "export".to_string(),
        "--out".into(),
        FEED_DIR.into(),
        "--key-file".into(),
        format!("{KEY_DIR}/{KEY_FILE}"),
    ];
    if let Some(days) = feed.retention_days {
        args.extend(["--retain-days".into(), days.to_string()]);
    }
    args
}

fn cron_job(system: &Validated, feed: &DataFeed) -> CronJob {
    let component = Component::DataFeed;
    let mut container = pod::container(system, component.name(), &feed.image);
    container.args = Some(args(feed));
    // The payments API's own wiring, so every way of providing the database (managed,
    // external, CloudNativePG) reaches the feed from the same Secret and key.
    container.env = Some(pod::connection_env("DATABASE_URL", &system.database));
    container.resources = Some(feed.resources.clone());
    container.volume_mounts = Some(vec![
        pod::mount("feed", FEED_DIR, false),
        pod::mount("key", KEY_DIR, true),
        // The root filesystem is read-only; nothing should write elsewhere, but a library's
        // temporary file must not fail the export.
        pod::mount("tmp", "/tmp", false),
    ]);
    let volumes = vec![
        Volume {
            name: "feed".into(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: feed.claim_name.clone(),
                read_only: Some(false),
            }),
            ..Volume::default()
        },
        Volume {
            name: "key".into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(feed.key_secret.clone()),
                items: Some(vec![KeyToPath {
                    key: feed.key.clone(),
                    path: KEY_FILE.into(),
                    mode: None,
                    user: None,
                }]),
                default_mode: Some(0o440),
                optional: Some(false),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        },
        pod::empty_dir("tmp"),
    ];
    let mut pod_spec = pod::pod_spec(system, SERVICE_UID, vec![container], volumes);
    // A failed attempt keeps its pod (and logs); the Job starts a new one.
    pod_spec.restart_policy = Some("Never".into());
    let mut pod_labels = meta::labels(&system.names, component);
    pod_labels.insert("app.kubernetes.io/version".into(), system.version.clone());
    CronJob {
        metadata: meta::object_meta(system, component, system.names.workload(component)),
        spec: CronJobSpec {
            schedule: feed.schedule.clone(),
            time_zone: Some("Etc/UTC".into()),
            concurrency_policy: Some("Forbid".into()),
            suspend: Some(feed.suspend),
            starting_deadline_seconds: Some(STARTING_DEADLINE_SECONDS),
            successful_jobs_history_limit: Some(HISTORY),
            failed_jobs_history_limit: Some(HISTORY),
            job_template: JobTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(meta::labels(&system.names, component)),
                    ..ObjectMeta::default()
                }),
                spec: Some(JobSpec {
                    backoff_limit: Some(BACKOFF_LIMIT),
                    template: PodTemplateSpec {
                        metadata: Some(ObjectMeta {
                            labels: Some(pod_labels),
                            ..ObjectMeta::default()
                        }),
                        spec: Some(pod_spec),
                    },
                    ..JobSpec::default()
                }),
            },
        },
        status: None,
    }
}
