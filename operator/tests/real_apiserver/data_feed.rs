//! `spec.dataFeed` on a real API server: the CronJob (accepted by the server's own validation),
//! its claim and generated Fernet key; a run completed through the real Job and CronJob
//! controllers reaching `status.dataFeed.lastSuccessfulTime`; the key never replaced; and the
//! files' claim kept when the feed is switched off.

use std::time::Duration;

use base64::Engine as _;
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{Binding, ObjectReference, PersistentVolumeClaim, Pod, Secret};
use kube::api::{ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use paysys_operator::crd::PaymentSystem;
use paysys_testkit::envtest::kubelet;
use serde_json::json;

use crate::support::{Env, Operator, apply_system, env, eventually, wait_condition};

const TIMEOUT: Duration = Duration::from_secs(30);

const FEED: &str = "
apiVersion: paysys.io/v1alpha1
kind: PaymentSystem
metadata:
  name: shop
spec:
  dataFeed:
    schedule: \"30 2 * * *\"
    retentionDays: 90
";

fn fernet_key(secret: &Secret) -> String {
    String::from_utf8(secret.data.as_ref().unwrap()["fernet-key"].0.clone()).unwrap()
}

/// One run: the CronJob controller starts its Job at the next minute (the schedule is every
/// minute), the Job controller makes its pod, and here the pod is bound to the fake node and
/// reported `Succeeded`, as a kubelet would. (A Job created by hand is never counted: the
/// CronJob controller only records the Jobs it started itself.)
async fn run_once(env: &Env, cron_job: &CronJob) -> Job {
    let jobs: Api<Job> = Api::namespaced(env.client.clone(), &env.namespace);
    let owner = cron_job.uid().unwrap();
    let job = eventually(
        "the CronJob controller to start a Job",
        Duration::from_secs(120),
        || async {
            jobs.list(&ListParams::default())
                .await
                .ok()?
                .items
                .into_iter()
                .find(|job| {
                    job.owner_references()
                        .iter()
                        .any(|o| o.uid == owner && o.controller == Some(true))
                })
        },
    )
    .await;
    let uid = job.uid().unwrap();
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), &env.namespace);
    let selector = format!("batch.kubernetes.io/controller-uid={uid}");
    let pod = eventually("the Job's pod", TIMEOUT, || async {
        pods.list(&ListParams::default().labels(&selector))
            .await
            .ok()?
            .items
            .into_iter()
            .next()
    })
    .await;
    let spec = pod.spec.as_ref().unwrap();
    let container = &spec.containers[0];
    assert_eq!(container.args.as_ref().unwrap()[0], "export");
    kubelet::ensure_node(&env.client).await.unwrap();
    let binding = Binding {
        metadata: ObjectMeta {
            name: Some(pod.name_any()),
            ..ObjectMeta::default()
        },
        target: ObjectReference {
            kind: Some("Node".into()),
            name: Some(kubelet::NODE.into()),
            api_version: Some("v1".into()),
            ..ObjectReference::default()
        },
    };
    pods.create_subresource::<_, serde_json::Value>(
        "binding",
        &pod.name_any(),
        &PostParams::default(),
        &binding,
    )
    .await
    .unwrap();
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    let succeeded = json!({"status": {
        "phase": "Succeeded",
        "startTime": now,
        "conditions": [{"type": "Ready", "status": "False", "reason": "PodCompleted", "lastTransitionTime": now}],
        "containerStatuses": [{
            "name": container.name,
            "image": container.image,
            "imageID": "",
            "ready": false,
            "restartCount": 0,
            "state": {"terminated": {"exitCode": 0, "reason": "Completed", "startedAt": now, "finishedAt": now}},
        }],
    }});
    pods.patch_status(
        &pod.name_any(),
        &PatchParams::default(),
        &Patch::Merge(succeeded),
    )
    .await
    .unwrap();
    job
}

#[tokio::test]
async fn a_data_feed_is_a_cron_job_whose_last_success_reaches_the_status() {
    let Some(env) = env("data-feed").await else {
        return;
    };
    let _operator = Operator::start(env.client.clone(), &env.namespace);
    apply_system(&env, &FEED.replace("30 2 * * *", "* * * * *")).await;
    let ps = wait_condition(&env, "shop", "Degraded", "False", TIMEOUT).await;
    let feed = ps
        .status
        .as_ref()
        .unwrap()
        .data_feed
        .clone()
        .expect("status.dataFeed");
    assert_eq!(feed.cron_job, "shop-data-feed");
    assert_eq!(feed.claim, "shop-data-feed-data");
    assert_eq!(feed.key_secret, "shop-feed-key/fernet-key");
    assert_eq!(feed.last_successful_time, None, "no export has run yet");

    // The objects as the API server stored them (its CronJob validation accepted the spec).
    let cron_jobs: Api<CronJob> = Api::namespaced(env.client.clone(), &env.namespace);
    let cron_job = cron_jobs.get("shop-data-feed").await.unwrap();
    let spec = &cron_job.spec;
    assert_eq!(spec.schedule, "* * * * *");
    assert_eq!(spec.time_zone.as_deref(), Some("Etc/UTC"));
    assert_eq!(spec.concurrency_policy.as_deref(), Some("Forbid"));
    let pod = spec
        .job_template
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap();
    let args = pod.containers[0].args.clone().unwrap();
    assert_eq!(&args[args.len() - 2..], ["--retain-days", "90"]);
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(env.client.clone(), &env.namespace);
    claims.get("shop-data-feed-data").await.unwrap();
    let secrets: Api<Secret> = Api::namespaced(env.client.clone(), &env.namespace);
    let key = fernet_key(&secrets.get("shop-feed-key").await.unwrap());
    let bytes = base64::engine::general_purpose::URL_SAFE
        .decode(&key)
        .unwrap();
    assert_eq!(bytes.len(), 32, "a Fernet key");

    // One run, started and completed through the real CronJob and Job controllers.
    run_once(&env, &cron_job).await;
    let api: Api<PaymentSystem> = Api::namespaced(env.client.clone(), &env.namespace);
    let status = eventually(
        "status.dataFeed.lastSuccessfulTime",
        Duration::from_secs(90),
        || async {
            let ps = api.get("shop").await.ok()?;
            let feed = ps.status?.data_feed?;
            feed.last_successful_time
                .clone()
                .map(|time| (feed.clone(), time))
        },
    )
    .await;
    let from_cron_job = cron_jobs
        .get("shop-data-feed")
        .await
        .unwrap()
        .status
        .unwrap()
        .last_successful_time
        .unwrap();
    assert_eq!(status.1, from_cron_job);
}

#[tokio::test]
async fn the_fernet_key_is_never_replaced_and_the_files_outlive_the_feed() {
    let Some(env) = env("data-feed-key").await else {
        return;
    };
    let _operator = Operator::start(env.client.clone(), &env.namespace);
    apply_system(&env, FEED).await;
    wait_condition(&env, "shop", "Degraded", "False", TIMEOUT).await;
    let secrets: Api<Secret> = Api::namespaced(env.client.clone(), &env.namespace);
    let generated = secrets.get("shop-feed-key").await.unwrap();
    let key = fernet_key(&generated);

    // The feed switched off: the CronJob goes; the key and the claim holding the files stay.
    let api: Api<PaymentSystem> = Api::namespaced(env.client.clone(), &env.namespace);
    api.patch(
        "shop",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"dataFeed": null}})),
    )
    .await
    .unwrap();
    let ps = wait_condition(&env, "shop", "Degraded", "False", TIMEOUT).await;
    assert_eq!(ps.status.unwrap().data_feed, None);
    let cron_jobs: Api<CronJob> = Api::namespaced(env.client.clone(), &env.namespace);
    eventually("the CronJob pruned", TIMEOUT, || async {
        cron_jobs
            .get_opt("shop-data-feed")
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(env.client.clone(), &env.namespace);
    let claim = claims.get("shop-data-feed-data").await.unwrap();
    assert!(
        claim.metadata.deletion_timestamp.is_none(),
        "the files' claim is kept"
    );

    // Switched on again: the very same key (files written before still decrypt).
    apply_system(&env, FEED).await;
    wait_condition(&env, "shop", "Degraded", "False", TIMEOUT).await;
    cron_jobs.get("shop-data-feed").await.unwrap();
    let again = secrets.get("shop-feed-key").await.unwrap();
    assert_eq!(fernet_key(&again), key);
    assert_eq!(
        again.uid(),
        generated.uid(),
        "the same Secret, not a new one"
    );

    // A key someone put there by hand (a restored backup) is kept too, never overwritten.
    let restored = base64::engine::general_purpose::URL_SAFE.encode([7u8; 32]);
    secrets
        .patch(
            "shop-feed-key",
            &PatchParams::default(),
            &Patch::Merge(json!({"stringData": {"fernet-key": restored}})),
        )
        .await
        .unwrap();
    api.patch(
        "shop",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"dataFeed": {"retentionDays": 30}}})),
    )
    .await
    .unwrap();
    wait_condition(&env, "shop", "Degraded", "False", TIMEOUT).await;
    assert_eq!(
        fernet_key(&secrets.get("shop-feed-key").await.unwrap()),
        restored
    );

    // A key that is not a Fernet key is reported on the resource, not found by a failed
    // export hours later.
    secrets
        .patch(
            "shop-feed-key",
            &PatchParams::default(),
            &Patch::Merge(json!({"stringData": {"fernet-key": "hunter2"}})),
        )
        .await
        .unwrap();
    let ps = wait_condition(&env, "shop", "Degraded", "True", TIMEOUT).await;
    let degraded = crate::support::condition(&ps, "Degraded").unwrap();
    assert_eq!(degraded.reason, "SecretKeyInvalid");
    assert!(
        degraded.message.contains("not a Fernet key"),
        "{}",
        degraded.message
    );
    assert!(!degraded.message.contains("hunter2"));
}

#[tokio::test]
async fn an_existing_claim_is_used_as_it_is() {
    let Some(env) = env("data-feed-claim").await else {
        return;
    };
    let _operator = Operator::start(env.client.clone(), &env.namespace);
    apply_system(
        &env,
        "
apiVersion: paysys.io/v1alpha1
kind: PaymentSystem
metadata:
  name: shop
spec:
  dataFeed:
    destination: {existingClaim: lake}
",
    )
    .await;
    wait_condition(&env, "shop", "Degraded", "False", TIMEOUT).await;
    let cron_job = Api::<CronJob>::namespaced(env.client.clone(), &env.namespace)
        .get("shop-data-feed")
        .await
        .unwrap();
    let pod = cron_job
        .spec
        .job_template
        .spec
        .unwrap()
        .template
        .spec
        .unwrap();
    let claim = pod
        .volumes
        .unwrap()
        .into_iter()
        .find_map(|volume| volume.persistent_volume_claim)
        .unwrap();
    assert_eq!(claim.claim_name, "lake");
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(env.client.clone(), &env.namespace);
    assert!(
        claims
            .get_opt("shop-data-feed-data")
            .await
            .unwrap()
            .is_none(),
        "no claim of its own"
    );
}
