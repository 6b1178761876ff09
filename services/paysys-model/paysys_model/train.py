"""`train`: prepared feed rows -> a LightGBM model, calibrated, with a threshold for a target
false-positive rate, written as a model directory with its card.

Three parts of the labeled rows, all by time (a random split would leak the future):
- fit: the older training rows, which the trees are grown on;
- calibration: the newest CALIBRATION_SHARE of the training rows, on which isotonic
  regression maps LightGBM's raw probability to a calibrated one (never the rows the trees
  saw, which they over-fit, and never validation, which must stay unseen);
- validation: the newest --validation-days days, used only to choose the threshold and to
  measure the model and the default rules on the same payments.
"""

import hashlib
import time

import numpy as np
import pyarrow.compute as pc

from . import card as cards
from .contract import (
    CARD_VERSION,
    FEATURE_NAMES,
    FEATURES_VERSION,
    FRAUD_REASONS,
    MODEL_FILE,
    NUM_THREADS,
    ModelError,
)
from .feed import iso, micros, prepare, prepared_matrix, read_feed
from .metrics import decision_metrics, threshold_for_fpr

CALIBRATION_SHARE = 0.2
NUM_BOOST_ROUND = 200
DRIFT_QUANTILES = tuple(i / 10 for i in range(1, 10))


def lightgbm_params(seed):
    """Binary trees, reproducible: one seed for every random choice LightGBM makes, its
    deterministic mode, row-wise histograms and a fixed thread count."""
    return {
        "objective": "binary",
        "learning_rate": 0.05,
        "num_leaves": 31,
        "min_data_in_leaf": 50,
        "feature_fraction": 0.9,
        "bagging_fraction": 0.8,
        "bagging_freq": 1,
        "seed": seed,
        "deterministic": True,
        "force_row_wise": True,
        "num_threads": NUM_THREADS,
        "verbosity": -1,
    }


def train(feed_path, out, seed, target_fpr, maturity_days, as_of_us, validation_days,
          log=print):
    """Reads the feed, prepares it and trains (see train_prepared); returns the card."""
    if not 0.0 < target_fpr < 1.0:
        raise ModelError(f"--target-fpr {target_fpr} must be between 0 and 1")
    cards.check_out(out)
    lap = Lap(log)
    feed = read_feed(feed_path)
    lap(f"read {feed.num_rows} payments")
    prep = prepare(feed, as_of_us, maturity_days, validation_days)
    del feed
    lap(f"prepared {prep.rows.num_rows} labeled payments (as of {iso(prep.as_of_us)}; "
        f"skipped {prep.skipped})")
    return train_prepared(prep, out, seed, target_fpr, lap)


class Lap:
    """Logs each step with the wall and CPU seconds it took (CPU time tells a slow step from a
    busy machine)."""

    def __init__(self, log):
        self.log = log
        self.wall, self.cpu = time.monotonic(), time.process_time()

    def __call__(self, text):
        wall, cpu = time.monotonic(), time.process_time()
        self.log(f"{text} [{wall - self.wall:.1f} s, cpu {cpu - self.cpu:.1f} s]")
        self.wall, self.cpu = wall, cpu


def parts(rows):
    """(fit, calibration, validation) tables of prepared rows (in time order)."""
    is_validation = pc.equal(rows["split"], "validation")
    training = rows.filter(pc.invert(is_validation))
    validation = rows.filter(is_validation)
    if training.num_rows == 0:
        raise ModelError("no labeled payments older than the validation window: the feed needs "
                         "more days of mature, approved payments than --validation-days")
    n_calibration = max(1, int(round(CALIBRATION_SHARE * training.num_rows)))
    fit = training.slice(0, training.num_rows - n_calibration)
    calibration = training.slice(training.num_rows - n_calibration)
    for name, part in (("training", fit), ("calibration", calibration),
                       ("validation", validation)):
        labels = part["label"].to_numpy(zero_copy_only=False) if part.num_rows else np.zeros(0)
        frauds = int(labels.sum())
        if frauds == 0 or frauds == len(labels):
            raise ModelError(
                f"the {name} part has one class only ({frauds} fraud of {len(labels)} labeled "
                f"payments): training needs disputes for {' or '.join(FRAUD_REASONS)} and "
                f"undisputed payments in every part")
    return fit, calibration, validation


def train_prepared(prep, out, seed, target_fpr, log):
    import lightgbm as lgb
    from sklearn.isotonic import IsotonicRegression
    from sklearn.metrics import roc_auc_score

    cards.check_out(out)
    fit, calibration_rows, validation = parts(prep.rows)

    params = lightgbm_params(seed)
    fit_x = prepared_matrix(fit)
    dataset = lgb.Dataset(fit_x, label=label(fit), feature_name=list(FEATURE_NAMES),
                          free_raw_data=True)
    log(f"split: {fit.num_rows} payments to fit, {calibration_rows.num_rows} to calibrate, "
        f"{validation.num_rows} to validate")
    booster = lgb.train(params, dataset, num_boost_round=NUM_BOOST_ROUND)
    log(f"trained {NUM_BOOST_ROUND} trees")
    model_bytes = booster.model_to_string().encode("utf-8")

    raw_calibration = booster.predict(prepared_matrix(calibration_rows), num_threads=NUM_THREADS)
    isotonic = IsotonicRegression(y_min=0.0, y_max=1.0, increasing=True, out_of_bounds="clip")
    isotonic.fit(raw_calibration, label(calibration_rows))
    x = [float(v) for v in isotonic.X_thresholds_]
    y = [float(v) for v in isotonic.y_thresholds_]
    if len(x) < 2:  # a constant map still needs two points for interpolation
        x, y = [0.0, 1.0], [y[0], y[0]]
    calibration = {"method": "isotonic", "x": x, "y": y}

    log(f"calibrated ({len(x)} points)")
    validation_x = prepared_matrix(validation)
    raw_validation = booster.predict(validation_x, num_threads=NUM_THREADS)
    score = cards.calibrate(raw_validation, calibration)
    y_validation = label(validation)
    threshold = threshold_for_fpr(score, y_validation, target_fpr)

    currency = validation["currency"].to_numpy(zero_copy_only=False)
    amount = validation["amount_minor"].to_numpy(zero_copy_only=False)
    model_metrics = decision_metrics(y_validation, score >= threshold, currency, amount, score)
    model_metrics["threshold"] = threshold
    # Isotonic calibration is flat in places, so it ties scores LightGBM had ordered.
    model_metrics["roc_auc_uncalibrated"] = float(roc_auc_score(y_validation, raw_validation))
    rules = validation["rules_outcome"].to_numpy(zero_copy_only=False)
    has_rules = np.array([r is not None for r in rules], dtype=bool)
    rules_metrics = decision_metrics(y_validation[has_rules], rules[has_rules] == "declined",
                                     currency[has_rules], amount[has_rules])
    rules_metrics["note"] = ("the default rules' own decisions (rules_outcome) on the same "
                             "validation payments that have one")

    fit_created = micros(fit["created_at"])
    card = {
        "card_version": CARD_VERSION,
        "model_version": cards.model_version(model_bytes, calibration, threshold),
        "model_file": MODEL_FILE,
        "model_sha256": hashlib.sha256(model_bytes).hexdigest(),
        "features_version": FEATURES_VERSION,
        "feature_names": list(FEATURE_NAMES),
        "calibration": calibration,
        "threshold": threshold,
        "target_fpr": target_fpr,
        "seed": seed,
        "training": {
            "window": {
                "from": iso(fit_created.min()),
                "to": iso(micros(validation["created_at"]).max()),
            },
            "rows": {
                "train": fit.num_rows,
                "calibration": calibration_rows.num_rows,
                "validation": validation.num_rows,
            },
            "frauds": {
                "train": int(label(fit).sum()),
                "calibration": int(label(calibration_rows).sum()),
                "validation": int(y_validation.sum()),
            },
            "split": {
                "calibration_from": iso(micros(calibration_rows["created_at"]).min()),
                "validation_from": iso(prep.validation_from_us),
            },
            "as_of": iso(prep.as_of_us),
            "maturity_days": prep.maturity_days,
            "label_rule": (
                "labeled iff decision_outcome = approved and created_at <= as_of - maturity; "
                f"fraud iff dispute_reason in {{{', '.join(FRAUD_REASONS)}}}"),
            "skipped": prep.skipped,
            "calibration": (
                f"isotonic, fit on the newest {CALIBRATION_SHARE:.0%} of the training rows by "
                "created_at (the trees never saw them); validation only chooses the threshold "
                "and measures"),
            "lightgbm": {"version": lgb.__version__, "params": params,
                         "num_boost_round": NUM_BOOST_ROUND},
        },
        "metrics": {"model": model_metrics, "rules": rules_metrics},
        "drift_reference": drift_reference(fit_x),
    }
    log("measured on validation")
    cards.write_model_dir(out, model_bytes, card)
    log(f"wrote {out}: {card['model_version']}, threshold {threshold:.6g} "
        f"(validation FPR {model_metrics['fpr']:.4g}, recall {model_metrics['recall']:.4g}; "
        f"rules recall {fmt(rules_metrics['recall'])} at FPR {fmt(rules_metrics['fpr'])})")
    return card


def label(rows):
    return rows["label"].to_numpy(zero_copy_only=False).astype(np.int64)


def fmt(value):
    return "n/a" if value is None else f"{value:.4g}"


def drift_reference(matrix):
    """Per feature: bucket edges at the training distribution's deciles (distinct values
    only) and the share of training rows in each bucket; a value v is in bucket
    searchsorted(edges, v, side='right'), as the engine computes PSI."""
    reference = {}
    for i, name in enumerate(FEATURE_NAMES):
        column = matrix[:, i]
        edges = np.unique(np.quantile(column, DRIFT_QUANTILES))
        buckets = np.searchsorted(edges, column, side="right")
        counts = np.bincount(buckets, minlength=len(edges) + 1)
        reference[name] = {
            "edges": [float(e) for e in edges],
            "shares": [float(c) / len(column) for c in counts],
        }
    return reference
