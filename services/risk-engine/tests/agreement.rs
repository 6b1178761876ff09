//! bosk against LightGBM: the Rust engine's scores agree with LightGBM's own `predict` on
//! 10,000 rows (raw probabilities and calibrated scores within 1e-6).
//!
//! Fixtures (`tests/fixtures/`, made by `make_model_fixture.py`): a 200-tree, 31-leaf LightGBM
//! model with its card, and 10,000 rows with LightGBM 4.7's raw prediction and numpy's
//! calibrated score of each. Its own test binary: pure CPU, no broker, so it never competes
//! with the timing-sensitive broker tests of `tests/engine`. bosk is young and pinned
//! (`=0.1.0`): this test is what makes an upgrade safe.

use std::path::{Path, PathBuf};

use paysys_core::features::{FEATURE_COUNT, FEATURE_NAMES, FeatureVector};
use risk_engine::model::Model;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// Rows of `agreement.csv`: the features, LightGBM's raw prediction, numpy's calibrated score.
fn agreement_rows() -> Vec<([f64; FEATURE_COUNT], f64, f64)> {
    let text = std::fs::read_to_string(fixtures().join("agreement.csv")).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    assert_eq!(
        header[..FEATURE_COUNT],
        FEATURE_NAMES,
        "columns in feature order"
    );
    assert_eq!(header[FEATURE_COUNT..], ["raw", "calibrated"]);
    lines
        .map(|line| {
            let v: Vec<f64> = line.split(',').map(|x| x.parse().unwrap()).collect();
            (
                v[..FEATURE_COUNT].try_into().unwrap(),
                v[FEATURE_COUNT],
                v[FEATURE_COUNT + 1],
            )
        })
        .collect()
}

/// bosk against LightGBM: raw probabilities within 1e-6 (the contract), calibrated scores too,
/// on 10,000 rows, with both outcomes represented.
#[test]
fn scores_agree_with_lightgbm_on_10000_rows() {
    let model = Model::load(&fixtures().join("model")).expect("the fixture model loads");
    let rows = agreement_rows();
    assert_eq!(rows.len(), 10_000);
    let (mut worst_raw, mut worst_calibrated, mut declined) = (0.0_f64, 0.0_f64, 0);
    for (features, raw, calibrated) in &rows {
        let score = model.score(&FeatureVector(*features));
        worst_raw = worst_raw.max((score.raw - raw).abs());
        worst_calibrated = worst_calibrated.max((score.calibrated - calibrated).abs());
        declined += usize::from(model.declines(score));
    }
    println!(
        "bosk vs LightGBM on {} rows: max |raw diff| {worst_raw:e}, max |calibrated diff| {worst_calibrated:e}, {declined} at or above threshold {}",
        rows.len(),
        model.threshold
    );
    assert!(worst_raw <= 1e-6, "raw probabilities differ by {worst_raw}");
    assert!(
        worst_calibrated <= 1e-6,
        "calibrated scores differ by {worst_calibrated}"
    );
    // A model that approved or declined everything would agree with anything trivially.
    assert!(declined > 0 && declined < rows.len(), "{declined} declined");
}
