//! The risk model through the broker and the binary: start-up refusals of a bad model (exit
//! code 2), model-mode and shadow decisions through the real broker, and the model metrics of
//! a running binary. (The agreement with LightGBM is `tests/agreement.rs`, its own binary.)
//!
//! Fixture (`tests/fixtures/model`, made by `make_model_fixture.py`): a 200-tree, 31-leaf
//! LightGBM model with its card.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use chrono::TimeZone;
use paysys_core::features::{FEATURE_COUNT, FeatureVector};
use paysys_core::risk_rules::RiskRules;
use paysys_core::{History, Outcome, PaymentMessage, Velocity};
use risk_engine::decide::{Decider, ModelMode};
use risk_engine::model::Model;
use risk_engine::random::RandomMode;
use risk_engine::rules::compile;
use uuid::Uuid;

use crate::harness::{Engine, WAIT, payment};
use crate::process::{get, sigterm, spawn};
use paysys_testkit::free_port;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn model_dir() -> PathBuf {
    fixtures().join("model")
}

fn model_dir_text() -> &'static str {
    concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/model")
}

/// The fixture model, parsed once for the whole binary (a debug build parses 680 KB slowly,
/// and CPU taken here is taken from the timing-sensitive broker tests running beside).
fn model() -> Arc<Model> {
    static MODEL: OnceLock<Arc<Model>> = OnceLock::new();
    MODEL
        .get_or_init(|| Arc::new(Model::load(&model_dir()).expect("the fixture model loads")))
        .clone()
}

/// A copy of the fixture model directory that a test may break.
struct ModelCopy(PathBuf);

impl ModelCopy {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("risk-model-{}", Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        for file in ["model.txt", "model-card.json"] {
            std::fs::copy(model_dir().join(file), dir.join(file)).unwrap();
        }
        Self(dir)
    }

    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }

    fn edit_card(&self, change: impl FnOnce(&mut serde_json::Value)) {
        let path = self.0.join("model-card.json");
        let mut card: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        change(&mut card);
        std::fs::write(&path, serde_json::to_vec_pretty(&card).unwrap()).unwrap();
    }

    /// Replaces model.txt and makes the card's hash match it, so only the parse can fail.
    fn replace_model(&self, text: &str) {
        use sha2::Digest;
        std::fs::write(self.0.join("model.txt"), text).unwrap();
        let digest = hex::encode(sha2::Sha256::digest(text.as_bytes()));
        self.edit_card(|card| card["model_sha256"] = digest.into());
    }
}

impl Drop for ModelCopy {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Each bad model stops the binary at start-up with exit code 2 and a message naming the
/// variable, the model's version and what is wrong (both versions for a feature mismatch).
#[tokio::test]
async fn a_bad_model_stops_the_engine_with_exit_code_2() {
    let engine = Engine::prepare().await;
    let version = model().version.clone();

    let wrong_features = ModelCopy::new();
    wrong_features.edit_card(|card| card["features_version"] = "payment-features/0".into());
    let renamed = ModelCopy::new();
    renamed.edit_card(|card| card["feature_names"][3] = "hour_local".into());
    let missing_card = ModelCopy::new();
    std::fs::remove_file(missing_card.0.join("model-card.json")).unwrap();
    let tampered = ModelCopy::new();
    let mut text = std::fs::read_to_string(tampered.0.join("model.txt")).unwrap();
    text = text.replacen("leaf_value=", "leaf_value=9", 1);
    std::fs::write(tampered.0.join("model.txt"), text).unwrap();
    let corrupt = ModelCopy::new();
    corrupt.replace_model("tree\nversion=v4\nTree=0\nnum_leaves=three\n");
    let shadow_wrong = ModelCopy::new();
    shadow_wrong.edit_card(|card| card["features_version"] = "payment-features/2".into());

    // (environment, parts the message must contain)
    type Case<'a> = (Vec<(&'a str, &'a str)>, Vec<String>);
    let cases: Vec<Case> = vec![
        (
            vec![("RISK_MODE", "model"), ("MODEL_DIR", wrong_features.path())],
            vec![
                "MODEL_DIR".into(),
                format!(
                    "model {version} was trained on features payment-features/0, this engine computes payment-features/1"
                ),
            ],
        ),
        (
            vec![("RISK_MODE", "model"), ("MODEL_DIR", renamed.path())],
            vec![
                "MODEL_DIR".into(),
                "feature_names differ from payment-features/1's at position 3".into(),
                r#"the card has "hour_local", this engine "hour_utc""#.into(),
            ],
        ),
        (
            vec![("RISK_MODE", "model"), ("MODEL_DIR", missing_card.path())],
            vec![format!(
                "MODEL_DIR: {}/model-card.json: cannot read",
                missing_card.path()
            )],
        ),
        (
            vec![("RISK_MODE", "model"), ("MODEL_DIR", tampered.path())],
            vec![
                format!(
                    "MODEL_DIR: {}/model.txt: model {version}: sha256 is ",
                    tampered.path()
                ),
                "the card says".into(),
            ],
        ),
        (
            vec![("RISK_MODE", "model"), ("MODEL_DIR", corrupt.path())],
            vec![format!(
                "MODEL_DIR: {}/model.txt: model {version}: not a LightGBM text model this engine can evaluate",
                corrupt.path()
            )],
        ),
        (
            vec![("RISK_MODE", "model")],
            vec!["MODEL_DIR: is required with RISK_MODE=model".into()],
        ),
        // A model on a volume the operator cannot read: it states the version it rolls out,
        // and a directory holding another one is refused (both versions named).
        (
            vec![
                ("RISK_MODE", "model"),
                ("MODEL_DIR", model_dir_text()),
                ("MODEL_VERSION", "m-0123456789abcdef"),
            ],
            vec![format!(
                "MODEL_VERSION: is m-0123456789abcdef, but {} (MODEL_DIR) holds model {version}",
                model_dir_text()
            )],
        ),
        // A bad challenger stops a rules-mode engine too: a broken model is never rolled out.
        (
            vec![("SHADOW_MODEL_DIR", shadow_wrong.path())],
            vec![
                "SHADOW_MODEL_DIR".into(),
                "trained on features payment-features/2, this engine computes payment-features/1"
                    .into(),
            ],
        ),
    ];
    // The refusal is also the container's termination message (the file the kubelet makes).
    let termination = std::env::temp_dir().join(format!("risk-termination-{}", Uuid::new_v4()));
    let termination_text = termination.to_str().unwrap().to_owned();
    for (mut extra, expected) in cases {
        std::fs::write(&termination, "").unwrap();
        extra.push(("TERMINATION_MESSAGE_PATH", &termination_text));
        let child = spawn(&engine, free_port(), &extra);
        let output = tokio::time::timeout(WAIT, child.wait_with_output())
            .await
            .expect("exits at once")
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{extra:?}: {stderr}");
        for part in expected {
            assert!(
                stderr.contains(&part),
                "{extra:?}: {stderr:?} lacks {part:?}"
            );
        }
        let message = std::fs::read_to_string(&termination).unwrap();
        assert!(
            !message.is_empty() && stderr.contains(&message),
            "{extra:?}: termination message {message:?} is not the refusal {stderr:?}"
        );
    }
    std::fs::remove_file(&termination).unwrap();
    engine.finish().await;
}

const BLOCKED_USER: Uuid = Uuid::from_u128(0xb1);

fn rules() -> risk_engine::rules::CompiledRules {
    compile(&RiskRules {
        version: "it-model".into(),
        blocked_user_ids: vec![BLOCKED_USER],
        ..Default::default()
    })
    .unwrap()
}

/// A payment at a fixed time (so its hour and weekday features, hence its score, are fixed).
fn at_noon(change: impl FnOnce(&mut PaymentMessage)) -> PaymentMessage {
    let mut p = payment();
    p.payment_data.created_at = Some(
        chrono::Utc
            .with_ymd_and_hms(2026, 11, 25, 12, 0, 0)
            .unwrap(),
    );
    p.history = Some(History {
        payer_payment_count: 20,
        payer_first_payment_at: Some(chrono::Utc.with_ymd_and_hms(2026, 10, 1, 0, 0, 0).unwrap()),
        payer_currency_count: 20,
        payer_currency_total_minor: 140_000,
        new_payee: false,
        new_payment_method: false,
        method_payment_count: 15,
        payee_window_count: 3,
    });
    change(&mut p);
    p
}

/// What the synthetic model was trained to call risky: a new payment method at night on a
/// young account, many payments in the window, the payer paying themselves (a soft rule: in
/// model mode only the model weighs it).
fn risky() -> PaymentMessage {
    at_noon(|p| {
        p.payment_data.created_at =
            Some(chrono::Utc.with_ymd_and_hms(2026, 11, 25, 3, 0, 0).unwrap());
        p.payment_data.payee_id = p.payment_data.user_id;
        p.payment_data.amount = "4000".parse().unwrap();
        p.velocity = Some(Velocity {
            window_seconds: 3600,
            count: 6,
            total_minor: 900_000,
        });
        let history = p.history.as_mut().unwrap();
        history.new_payment_method = true;
        history.new_payee = true;
        history.payer_first_payment_at =
            Some(chrono::Utc.with_ymd_and_hms(2026, 11, 24, 0, 0, 0).unwrap());
        history.payer_payment_count = 2;
        history.payer_currency_count = 2;
        history.payer_currency_total_minor = 2_000;
    })
}

fn score_of(model: &Model, p: &PaymentMessage) -> f64 {
    model
        .score(&FeatureVector::of(p, chrono::Utc::now()))
        .calibrated
}

/// Model mode through the real broker: the model declines the risky payment (reason `model`,
/// even though only a soft rule fired), a hard rule declines on its own whatever the score,
/// a clean payment is approved; every decision carries its features, model score and
/// threshold, and what the rules alone decided.
#[tokio::test]
async fn model_mode_decides_through_the_broker() {
    let model = model();
    let clean = at_noon(|_| {});
    let risky = risky();
    let blocked = at_noon(|p| p.payment_data.user_id = BLOCKED_USER);
    // The cases must mean what they say with this model.
    assert!(
        score_of(&model, &clean) < model.threshold,
        "clean payment scores low"
    );
    assert!(
        score_of(&model, &risky) >= model.threshold,
        "risky payment scores high"
    );
    assert!(
        score_of(&model, &blocked) < model.threshold,
        "blocked payment scores low"
    );

    let engine = Engine::start(Decider::Model(Box::new(ModelMode {
        rules: rules(),
        model: model.clone(),
    })))
    .await;
    for p in [&clean, &risky, &blocked] {
        engine.publish(p).await;
    }
    let ids = [clean.payment_id, risky.payment_id, blocked.payment_id];
    let decisions = engine.decisions_for(&ids).await;
    let decision = |p: &PaymentMessage| decisions[&p.payment_id][0].clone();

    for p in [&clean, &risky, &blocked] {
        let d = decision(p);
        let features = FeatureVector::of(p, chrono::Utc::now());
        assert_eq!(
            d.features,
            Some(features.log()),
            "the features scored are logged"
        );
        let scored = d.model.as_ref().expect("a model score");
        assert_eq!(scored.version, model.version);
        assert_eq!(scored.threshold, model.threshold);
        assert_eq!(scored.score, model.score(&features).calibrated);
        assert_eq!(d.rules_version, "it-model");
    }

    let d = decision(&clean);
    assert_eq!((d.outcome, d.score), (Outcome::Approved, 0));
    assert!(d.reasons.is_empty(), "{d:?}");
    assert_eq!(d.rules_outcome, Some(Outcome::Approved));

    let d = decision(&risky);
    assert_eq!((d.outcome, d.score), (Outcome::Declined, 100));
    let rules: Vec<&str> = d.reasons.iter().map(|r| r.rule.as_str()).collect();
    assert_eq!(
        rules,
        ["model"],
        "payer_is_payee is soft: only the model speaks"
    );
    let s = d.model.as_ref().unwrap().score;
    assert_eq!(
        d.reasons[0].detail,
        format!("model score {s:.4} ≥ threshold {:.4}", model.threshold)
    );
    // The rules alone would have declined it too (payer_is_payee scores 100).
    assert_eq!(d.rules_outcome, Some(Outcome::Declined));

    let d = decision(&blocked);
    assert_eq!((d.outcome, d.score), (Outcome::Declined, 100));
    let rules: Vec<&str> = d.reasons.iter().map(|r| r.rule.as_str()).collect();
    assert_eq!(rules, ["blocked_user"], "a hard rule declines on its own");
    assert_eq!(d.rules_outcome, Some(Outcome::Declined));

    engine.wait_decided(3).await;
    let text = engine.metrics.render();
    // The harness's Metrics::new() watches no model: scores are still counted per version.
    let count = format!(
        "paysys_risk_model_score_count{{model_version=\"{}\",role=\"champion\"}} 3",
        model.version
    );
    assert!(text.contains(&count), "{text}");
    engine.finish().await;
}

/// A shadow beside rules mode: every decision carries the challenger's score, the rules alone
/// decide (even when the shadow would decline), and the features are logged.
#[tokio::test]
async fn a_shadow_scores_beside_rules_mode_and_never_decides() {
    let model = model();
    let risky = risky();
    let mut clean = at_noon(|_| {});
    clean.payment_data.payee_id = Uuid::new_v4();
    let engine = Engine::start(Decider::Shadowed(
        Box::new(Decider::Rules(Box::new(
            compile(&RiskRules {
                version: "it-shadow".into(),
                flag_payer_is_payee: false,
                ..Default::default()
            })
            .unwrap(),
        ))),
        model.clone(),
    ))
    .await;
    engine.publish(&risky).await;
    engine.publish(&clean).await;
    let decisions = engine
        .decisions_for(&[risky.payment_id, clean.payment_id])
        .await;
    for p in [&risky, &clean] {
        let d = &decisions[&p.payment_id][0];
        assert_eq!(d.outcome, Outcome::Approved, "the rules decide: {d:?}");
        assert_eq!(d.rules_outcome, Some(Outcome::Approved));
        assert_eq!(d.rules_version, "it-shadow");
        assert!(d.model.is_none());
        let shadow = d.shadow.as_ref().expect("the shadow's score");
        assert_eq!(shadow.version, model.version);
        assert_eq!(shadow.score, score_of(&model, p));
        assert_eq!(shadow.threshold, model.threshold);
        assert_eq!(
            d.features,
            Some(FeatureVector::of(p, chrono::Utc::now()).log())
        );
    }
    assert!(
        decisions[&risky.payment_id][0]
            .shadow
            .as_ref()
            .unwrap()
            .score
            >= model.threshold
    );
    engine.finish().await;
}

/// Random mode logs features too (and no rules outcome); its outcome is the draw's, as ever.
#[tokio::test]
async fn random_mode_logs_the_features() {
    let mode = RandomMode::new(0.7, 0).unwrap();
    let engine = Engine::start(Decider::Random(mode.clone())).await;
    let p = at_noon(|_| {});
    engine.publish(&p).await;
    let d = engine.next_decision(WAIT).await.expect("a decision");
    assert_eq!(
        d.features,
        Some(FeatureVector::of(&p, chrono::Utc::now()).log())
    );
    assert_eq!(d.rules_outcome, None);
    assert!(d.model.is_none() && d.shadow.is_none());
    let expected = if mode.approves(mode.draw(p.payment_id)) {
        Outcome::Approved
    } else {
        Outcome::Declined
    };
    assert_eq!(d.outcome, expected);
    engine.finish().await;
}

/// The binary in model mode with a shadow: decides, and `/metrics` shows both models, their
/// score histograms, verdicts and the drift of every feature.
#[tokio::test]
async fn the_binary_serves_a_model_and_reports_its_metrics() {
    let engine = Engine::prepare().await;
    let port = free_port();
    let dir = model_dir();
    let dir = dir.to_str().unwrap();
    let mut child = spawn(
        &engine,
        port,
        &[
            ("RISK_MODE", "model"),
            ("MODEL_DIR", dir),
            ("SHADOW_MODEL_DIR", dir),
            ("DRIFT_WINDOW", "100"),
        ],
    );
    let ready = paysys_testkit::eventually(WAIT, || async move {
        get(port, "/readyz").await.filter(|(s, _)| *s == 200)
    })
    .await;
    assert!(ready.is_some(), "the engine becomes ready");
    let version = model().version.clone();
    let payments: Vec<PaymentMessage> = (0..5).map(|_| at_noon(|_| {})).collect();
    engine.publish_all(&payments).await;
    let ids: Vec<Uuid> = payments.iter().map(|p| p.payment_id).collect();
    let decisions = engine.decisions_for(&ids).await;
    assert_eq!(decisions.len(), 5);
    for d in decisions.values() {
        assert_eq!(d[0].model.as_ref().unwrap().version, version);
        assert_eq!(d[0].shadow.as_ref().unwrap().version, version);
    }
    let counted =
        format!("paysys_risk_model_score_count{{model_version=\"{version}\",role=\"shadow\"}} 5");
    let text = paysys_testkit::eventually(WAIT, || {
        let counted = counted.clone();
        async move {
            get(port, "/metrics")
                .await
                .filter(|(_, b)| b.contains(&counted))
        }
    })
    .await
    .map(|(_, body)| body)
    .expect("the scores are counted in /metrics");
    for line in [
        format!("paysys_risk_model_info{{model_version=\"{version}\",role=\"champion\"}} 1"),
        format!("paysys_risk_model_info{{model_version=\"{version}\",role=\"shadow\"}} 1"),
        format!("paysys_risk_model_score_count{{model_version=\"{version}\",role=\"champion\"}} 5"),
        format!(
            "paysys_risk_model_decisions_total{{model_version=\"{version}\",role=\"champion\",outcome=\"approved\"}} 5"
        ),
        format!("paysys_risk_feature_drift_window{{model_version=\"{version}\"}} 5"),
    ] {
        assert!(text.contains(&line), "{line} missing from {text}");
    }
    let drift: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("paysys_risk_feature_drift_psi{"))
        .collect();
    assert_eq!(drift.len(), FEATURE_COUNT, "{drift:#?}");
    // Five identical payments are nothing like the training distribution.
    let amount = drift
        .iter()
        .find(|l| l.contains("feature=\"amount_minor\""))
        .unwrap();
    let psi: f64 = amount.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(psi > 0.25, "{amount}");
    sigterm(&child).await;
    let status = tokio::time::timeout(WAIT, child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success());
    engine.finish().await;
}
