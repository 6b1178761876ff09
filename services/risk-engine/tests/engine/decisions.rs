//! Decisions through the broker: each rule firing and not, random mode, duplicates, the
//! original demo's hand-written message.

use std::collections::BTreeMap;
use std::time::Duration;

use paysys_core::risk_rules::{RiskRules, VelocityRules};
use paysys_core::{Outcome, PaymentMessage, Velocity};
use risk_engine::decide::Decider;
use risk_engine::random::RandomMode;
use risk_engine::rules::compile;
use uuid::Uuid;

use crate::harness::{Engine, WAIT, essence, payment};

const BLOCKED_USER: Uuid = Uuid::from_u128(0xb1);
const BLOCKED_PAYEE: Uuid = Uuid::from_u128(0xb2);
const BLOCKED_METHOD: Uuid = Uuid::from_u128(0xb3);

fn rules() -> Decider {
    Decider::Rules(Box::new(
        compile(&RiskRules {
            version: "it-1".into(),
            allowed_currencies: vec!["USD".into(), "JPY".into()],
            max_amount: BTreeMap::from([("USD".into(), "1000".into())]),
            blocked_user_ids: vec![BLOCKED_USER],
            blocked_payee_ids: vec![BLOCKED_PAYEE],
            blocked_payment_method_ids: vec![BLOCKED_METHOD],
            velocity: Some(VelocityRules {
                window_seconds: 3600,
                max_count: Some(5),
                max_total: BTreeMap::from([("USD".into(), "2000".into())]),
            }),
            ..Default::default()
        })
        .unwrap(),
    ))
}

fn with(change: impl FnOnce(&mut PaymentMessage)) -> PaymentMessage {
    let mut p = payment();
    change(&mut p);
    p
}

fn velocity(count: u64, total_minor: i64) -> Option<Velocity> {
    Some(Velocity {
        window_seconds: 3600,
        count,
        total_minor,
    })
}

#[tokio::test]
async fn each_rule_fires_and_does_not_fire() {
    let engine = Engine::start(rules()).await;
    // (payment, rules expected to fire). Each firing case has a twin just inside the limit.
    let cases: Vec<(PaymentMessage, Vec<&str>)> = vec![
        (payment(), vec![]),
        (
            with(|p| p.payment_data.currency = "EUR".parse().unwrap()),
            vec!["currency_not_allowed"],
        ),
        (
            with(|p| {
                p.payment_data.currency = "JPY".parse().unwrap();
                p.payment_data.amount = "7050".parse().unwrap();
            }),
            vec![],
        ),
        (
            with(|p| p.payment_data.amount = "1000.01".parse().unwrap()),
            vec!["amount_above_max"],
        ),
        (
            with(|p| p.payment_data.amount = "1000".parse().unwrap()),
            vec![],
        ),
        (
            with(|p| p.payment_data.user_id = BLOCKED_USER),
            vec!["blocked_user"],
        ),
        (
            with(|p| p.payment_data.payee_id = BLOCKED_PAYEE),
            vec!["blocked_payee"],
        ),
        (
            with(|p| p.payment_data.payment_method_id = BLOCKED_METHOD),
            vec!["blocked_payment_method"],
        ),
        (
            with(|p| p.velocity = velocity(5, 0)),
            vec!["velocity_count"],
        ),
        (with(|p| p.velocity = velocity(4, 0)), vec![]),
        (
            with(|p| p.velocity = velocity(1, 192_951)),
            vec!["velocity_total"],
        ),
        (with(|p| p.velocity = velocity(1, 192_950)), vec![]),
        (
            with(|p| p.velocity = velocity(5, 192_951)),
            vec!["velocity_count", "velocity_total"],
        ),
        (
            with(|p| p.payment_data.payee_id = p.payment_data.user_id),
            vec!["payer_is_payee"],
        ),
    ];
    for (payment, _) in &cases {
        engine.publish(payment).await;
    }
    let ids: Vec<Uuid> = cases.iter().map(|(p, _)| p.payment_id).collect();
    let decisions = engine.decisions_for(&ids).await;
    for (payment, expected) in &cases {
        let decision = &decisions
            .get(&payment.payment_id)
            .unwrap_or_else(|| panic!("no decision for a payment expecting {expected:?}"))[0];
        let fired: Vec<&str> = decision.reasons.iter().map(|r| r.rule.as_str()).collect();
        assert_eq!(&fired, expected, "{decision:?}");
        assert_eq!(decision.rules_version, "it-1");
        // Hard rules score 100 and decline alone; velocity rules score 60 and need two.
        let score: u32 = fired
            .iter()
            .map(|r| if r.starts_with("velocity") { 60 } else { 100 })
            .sum();
        assert_eq!(decision.score, score);
        let outcome = if score >= 100 {
            Outcome::Declined
        } else {
            Outcome::Approved
        };
        assert_eq!(decision.outcome, outcome, "{decision:?}");
    }
    engine.wait_decided(cases.len() as u64).await;
    assert_eq!(
        engine
            .queue_len(&engine.broker.topology.payments_queue)
            .await,
        0
    );
    engine.finish().await;
}

#[tokio::test]
async fn the_original_demo_message_published_by_hand_is_decided() {
    let engine = Engine::start(Decider::Rules(Box::default())).await;
    // Exactly what the original Getting Started suggests publishing: no schema_version, no
    // velocity, amount as a JSON number.
    let body = br#"{"payment_id": "4b0e2f7c-8a51-4c1e-9a55-1e2a3b4c5d6e",
        "payment_data": {"amount": 70.5, "currency": "USD",
          "userId": "6f1c0c8e-5b0e-4d8e-9f3a-2b7d1c9e4a10",
          "payeeId": "1b2c3d4e-5f60-4a1b-8c2d-3e4f5a6b7c8d",
          "paymentMethodId": "9a8b7c6d-5e4f-4a3b-9c2d-1e0f9a8b7c6d"}}"#;
    engine.publish_raw(body).await;
    let decision = engine.next_decision(WAIT).await.expect("a decision");
    assert_eq!(
        decision.payment_id.to_string(),
        "4b0e2f7c-8a51-4c1e-9a55-1e2a3b4c5d6e"
    );
    assert_eq!(decision.outcome, Outcome::Approved);
    assert_eq!(decision.rules_version, "default");
    engine.finish().await;
}

#[tokio::test]
async fn duplicate_delivery_publishes_the_same_decision_again() {
    let engine = Engine::start(rules()).await;
    let declined = with(|p| p.payment_data.user_id = BLOCKED_USER);
    let approved = payment();
    for p in [&declined, &approved, &declined, &approved] {
        engine.publish(p).await;
    }
    let mut decisions = Vec::new();
    while decisions.len() < 4 {
        decisions.push(engine.next_decision(WAIT).await.expect("four decisions"));
    }
    for id in [declined.payment_id, approved.payment_id] {
        let same: Vec<_> = decisions
            .iter()
            .filter(|d| d.payment_id == id)
            .map(essence)
            .collect();
        assert_eq!(same.len(), 2);
        assert_eq!(
            same[0], same[1],
            "a duplicate must get an identical decision"
        );
    }
    assert!(
        engine
            .next_decision(Duration::from_millis(300))
            .await
            .is_none()
    );
    engine.finish().await;
}

#[tokio::test]
async fn random_mode_is_repeatable_per_payment() {
    let mode = RandomMode::new(0.5, 11).unwrap();
    let engine = Engine::start(Decider::Random(mode.clone())).await;
    let payments: Vec<PaymentMessage> = (0..200).map(|_| payment()).collect();
    // Every payment twice: the redelivery must get the same outcome.
    engine.publish_all(&payments).await;
    engine.publish_all(&payments).await;
    let ids: Vec<Uuid> = payments.iter().map(|p| p.payment_id).collect();
    let mut decisions = engine.decisions_for(&ids).await;
    // decisions_for stops at the first of each; wait for the second copies too.
    while decisions.values().map(Vec::len).sum::<usize>() < 400 {
        let d = engine
            .next_decision(WAIT)
            .await
            .expect("the duplicate decisions");
        decisions.entry(d.payment_id).or_default().push(d);
    }
    let mut approved = 0;
    for id in &ids {
        let both = &decisions[id];
        assert_eq!(both.len(), 2);
        assert_eq!(essence(&both[0]), essence(&both[1]));
        let expected = if mode.approves(mode.draw(*id)) {
            Outcome::Approved
        } else {
            Outcome::Declined
        };
        assert_eq!(both[0].outcome, expected);
        assert_eq!(both[0].rules_version, "random:p=0.5:seed=11");
        approved += usize::from(expected == Outcome::Approved);
    }
    // 200 fair draws: both outcomes occur (probability of failing ~1e-60).
    assert!(approved > 0 && approved < 200);
    engine.finish().await;
}
