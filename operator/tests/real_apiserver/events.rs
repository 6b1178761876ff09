//! The Normal Events of what the operator did, on a real API server: the children created,
//! a rollout finished (naming the generation), the system ready; each once per change, none
//! for a reconcile that changes nothing (a restarted operator reconciling everything again).

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::events::v1::Event;
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams};
use paysys_operator::crd::PaymentSystem;
use paysys_testkit::envtest::kubelet::FakeKubelet;
use serde_json::json;

use crate::support::{Env, Operator, TEST_MANAGER, apply_system, env, eventually, wait_condition};

const TIMEOUT: Duration = Duration::from_secs(30);
const MINIMAL: &str = include_str!("../../../examples/paymentsystem-minimal.yaml");

/// The Normal Events on PaymentSystem `shop`: `(reason, note, occurrences)`, a repeated
/// Event counting each time its series does.
async fn normal_events(env: &Env) -> Vec<(String, String, i32)> {
    let api: Api<Event> = Api::namespaced(env.client.clone(), &env.namespace);
    let mut events: Vec<(String, String, i32)> = api
        .list(&ListParams::default())
        .await
        .expect("list Events")
        .items
        .into_iter()
        .filter(|event| {
            event.type_.as_deref() == Some("Normal")
                && event.regarding.as_ref().is_some_and(|regarding| {
                    regarding.kind.as_deref() == Some("PaymentSystem")
                        && regarding.name.as_deref() == Some("shop")
                })
        })
        .map(|event| {
            let occurrences = event.series.as_ref().map_or(1, |series| series.count);
            (
                event.reason.unwrap_or_default(),
                event.note.unwrap_or_default(),
                occurrences,
            )
        })
        .collect();
    events.sort();
    events
}

/// How often each reason was told.
fn told(events: &[(String, String, i32)]) -> BTreeMap<String, i32> {
    let mut told = BTreeMap::new();
    for (reason, _, occurrences) in events {
        *told.entry(reason.clone()).or_default() += occurrences;
    }
    told
}

async fn wait_told(env: &Env, expected: &[(&str, i32)]) -> Vec<(String, String, i32)> {
    let expected: BTreeMap<String, i32> = expected
        .iter()
        .map(|(reason, count)| (reason.to_string(), *count))
        .collect();
    let found = paysys_testkit::eventually(TIMEOUT, || async {
        let events = normal_events(env).await;
        (told(&events) == expected).then_some(events)
    })
    .await;
    match found {
        Some(events) => events,
        None => panic!(
            "expected Normal Events {expected:?}, have {:?}",
            normal_events(env).await
        ),
    }
}

#[tokio::test]
async fn what_the_operator_did_is_told_once_as_normal_events() {
    let Some(env) = env("events").await else {
        return;
    };
    let operator = Operator::start(env.client.clone(), &env.namespace);
    apply_system(&env, MINIMAL).await;
    wait_condition(&env, "shop", "Degraded", "False", TIMEOUT).await;
    // Created, not yet rolled out (nothing runs the pods).
    let events = wait_told(&env, &[("Created", 1)]).await;
    let (_, created, _) = &events[0];
    assert!(
        created.starts_with("created ") && created.contains("Deployment"),
        "{created}"
    );

    let _kubelet = FakeKubelet::start(env.client.clone(), &env.namespace)
        .await
        .unwrap();
    wait_condition(&env, "shop", "Ready", "True", TIMEOUT).await;
    let events = wait_told(&env, &[("Created", 1), ("Ready", 1), ("RolledOut", 1)]).await;
    assert!(
        events
            .iter()
            .any(|(reason, note, _)| reason == "RolledOut" && note.contains("generation 1")),
        "{events:?}"
    );

    // A restarted operator reconciles everything again and changes nothing: nothing told.
    operator.stop().await;
    let restarted = Operator::start(env.client.clone(), &env.namespace);
    eventually("the restarted operator to reconcile", TIMEOUT, || async {
        (restarted.metrics.reconciliations.get() >= 1).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        told(&normal_events(&env).await),
        told(&events),
        "a reconcile that changed nothing told something"
    );

    // A new generation: rolled out (and ready) once more, naming it.
    let api: Api<PaymentSystem> = Api::namespaced(env.client.clone(), &env.namespace);
    api.patch(
        "shop",
        &PatchParams::apply(TEST_MANAGER).force(),
        &Patch::Apply(json!({
            "apiVersion": "paysys.io/v1alpha1",
            "kind": "PaymentSystem",
            "metadata": {"name": "shop"},
            "spec": {"riskEngine": {"replicas": 2}},
        })),
    )
    .await
    .expect("a spec change");
    let ps = wait_condition(&env, "shop", "Ready", "True", TIMEOUT).await;
    assert_eq!(ps.metadata.generation, Some(2));
    let events = wait_told(&env, &[("Created", 1), ("Ready", 2), ("RolledOut", 2)]).await;
    assert!(
        events
            .iter()
            .any(|(reason, note, _)| reason == "RolledOut" && note.contains("generation 2")),
        "{events:?}"
    );
}
