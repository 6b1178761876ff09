"""evaluate: champion vs challenger by hand, and the model-vs-rules report on a hold-out."""

import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from conftest import cli, feed_table, payment, write_day
from paysys_model import card as cards
from paysys_model import synth
from paysys_model.feed import feature_matrix, prepare, read_feed

T0 = synth.START_US


def scored(n, fraud, champion, challenger, **fields):
    values = dict(model_version="m-champion", model_score=champion, model_threshold=0.5,
                  shadow_model_version="m-challenger", shadow_score=challenger)
    values.update(fields)
    row = payment(n, T0 + n * 1_000_000, **values)
    return row, fraud


@pytest.fixture
def small(tmp_path):
    """Ten payments with known scores: the expected figures are worked out by hand below."""
    rows = [
        scored(1, True, 0.9, 0.95),
        scored(2, True, 0.4, 0.65),
        scored(3, True, 0.7, 0.5),
        scored(4, False, 0.6, 0.1),
        scored(5, False, 0.1, 0.7),
        scored(6, False, 0.2, 0.2),
        scored(7, False, 0.3, 0.3),
        # No model decided: the rules' own outcome is the champion's.
        scored(8, False, None, 0.4, model_version=None, model_threshold=None,
               rules_outcome="declined", decision_outcome="declined", status="declined"),
        # Another shadow model's score: not the challenger's, left out of the comparison.
        scored(9, True, 0.9, 0.9, shadow_model_version="m-older"),
        # No ground truth for it.
        (payment(10, T0 + 10_000_000), None),
    ]
    folder = str(tmp_path / "feed")
    write_day(folder, feed_table([r for r, _ in rows]))
    truth = [(r["payment_id"], f) for r, f in rows if f is not None]
    pq.write_table(pa.table({"payment_id": [i for i, _ in truth],
                             "is_fraud": [f for _, f in truth],
                             "pattern": ["x" if f else "legit" for _, f in truth]}),
                   str(tmp_path / "truth.parquet"))
    (tmp_path / "challenger.json").write_text(json.dumps(
        {"model_version": "m-challenger", "threshold": 0.6}))
    return tmp_path


def test_champion_and_challenger_by_hand(small):
    out = small / "report.json"
    done = cli("evaluate", "--feed", small / "feed", "--truth", small / "truth.parquet",
               "--challenger-card", small / "challenger.json", "--json", out)
    assert done.returncode == 0, done.stderr
    report = json.loads(out.read_text())
    assert report["labels"] == "truth" and report["payments"] == 9
    assert report["left_out"] == 1
    champion, challenger = report["champion"], report["challenger"]
    assert champion["deciders"] == ["m-champion", "rules"]
    # Champion declines 1, 3 (fraud), 4, 8 (legitimate).
    assert (champion["rows"], champion["frauds"], champion["declined"]) == (8, 3, 4)
    assert champion["recall"] == pytest.approx(2 / 3)
    assert champion["precision"] == pytest.approx(2 / 4)
    assert champion["fpr"] == pytest.approx(2 / 5)
    assert champion["approval_rate"] == pytest.approx(4 / 8)
    assert champion["fraud_amount_caught_minor"] == {"USD": 1001 + 1003}
    assert champion["legit_amount_declined_minor"] == {"USD": 1004 + 1008}
    # Challenger (threshold 0.6) declines 1, 2 (fraud) and 5 (legitimate).
    assert challenger["recall"] == pytest.approx(2 / 3)
    assert challenger["precision"] == pytest.approx(2 / 3)
    assert challenger["fpr"] == pytest.approx(1 / 5)
    assert challenger["approval_rate"] == pytest.approx(5 / 8)
    assert challenger["fraud_amount_caught_minor"] == {"USD": 1001 + 1002}
    assert challenger["legit_amount_declined_minor"] == {"USD": 1005}
    assert report["approval_rate_change"] == pytest.approx(5 / 8 - 4 / 8)
    # Per pattern of the truth file ("x" for fraud here): payments 1-3 and 4-8.
    assert report["by_pattern"] == {
        "legit": {"payments": 5, "champion_declined": 2, "challenger_declined": 1},
        "x": {"payments": 3, "champion_declined": 2, "challenger_declined": 2},
    }
    # The table on stdout names both and carries the same figures.
    assert "champion (m-champion, rules)" in done.stdout
    assert "challenger (m-challenger)" in done.stdout
    assert "approval_rate_change" in done.stdout


def test_a_missing_challenger_is_a_one_line_error(small):
    (small / "challenger.json").write_text(json.dumps(
        {"model_version": "m-nobody", "threshold": 0.6}))
    done = cli("evaluate", "--feed", small / "feed", "--truth", small / "truth.parquet",
               "--challenger-card", small / "challenger.json")
    assert done.returncode == 1
    assert "no labeled payment has a shadow score of m-nobody" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_disputes_label_the_same_payments_as_training(feed_dir, tmp_path):
    out = tmp_path / "report.json"
    done = cli("evaluate", "--feed", feed_dir, "--json", out)
    assert done.returncode == 0, done.stderr
    report = json.loads(out.read_text())
    rows = prepare(read_feed(feed_dir)).rows
    assert report["labels"] == "disputes"
    assert report["payments"] == rows.num_rows
    assert report["frauds"] == pc.sum(rows["label"]).as_py()
    assert report["challenger"] is None


def test_the_model_catches_twice_what_the_rules_catch_on_a_later_holdout(
        model_dir, holdout, tmp_path):
    feed, truth = holdout
    out = tmp_path / "compare.json"
    done = cli("evaluate", "--feed", feed, "--truth", truth, "--compare-rules", model_dir,
               "--json", out)
    assert done.returncode == 0, done.stderr
    compare = json.loads(out.read_text())["compare_rules"]
    # Recomputed independently: the rules' own decisions and FPR on every payment.
    table = read_feed(feed)
    truth_table = pq.read_table(truth)
    fraud_by_id = dict(zip(truth_table["payment_id"].to_pylist(),
                           truth_table["is_fraud"].to_pylist()))
    fraud = np.array([fraud_by_id[i] for i in table["payment_id"].to_pylist()])
    rules = np.array(table["rules_outcome"].to_pylist()) == "declined"
    assert compare["payments"] == table.num_rows
    assert compare["rules"]["fraud_caught"] == int((fraud & rules).sum())
    rules_fpr = (~fraud & rules).sum() / (~fraud).sum()
    assert compare["compared_at_fpr"] == pytest.approx(max(rules_fpr, 0.01))
    # The model, scored offline from the directory, at that FPR.
    booster, card = cards.load_model_dir(model_dir)
    score = cards.score(booster, card, feature_matrix(table["features"]))
    declined = score >= compare["model"]["threshold"]
    assert compare["model"]["fraud_caught"] == int((fraud & declined).sum())
    assert (~fraud & declined).sum() / (~fraud).sum() <= compare["compared_at_fpr"]
    assert compare["model"]["fraud_caught"] >= 2 * compare["rules"]["fraud_caught"]
    assert compare["target_2x_met"] is True
    assert "target (>= 2x both): met" in done.stdout
    by_pattern = compare["by_pattern"]
    assert by_pattern["planted"]["model_declined"] == compare["model"]["fraud_caught"]
    assert by_pattern["planted"]["rules_declined"] == compare["rules"]["fraud_caught"]
    assert by_pattern["legit"]["payments"] + by_pattern["planted"]["payments"] == table.num_rows


def test_the_loop_a_trained_model_in_shadow(model_dir, holdout, tmp_path):
    """The hold-out as an engine with the trained model in shadow would have exported it:
    shadow_score = the model's score of the logged features. evaluate's challenger must then
    be exactly the model at its card's threshold, and its champion (the rules) the rules."""
    feed, truth = holdout
    days = sorted(os.listdir(feed))
    table = pa.concat_tables([pq.read_table(os.path.join(feed, d, "payments.parquet"))
                              for d in days])
    booster, card = cards.load_model_dir(model_dir)
    score = cards.score(booster, card, feature_matrix(table["features"]))
    shadowed = synth.with_columns(
        table, shadow_model_version=[card["model_version"]] * table.num_rows,
        shadow_score=score)
    synth.write_feed(shadowed, str(tmp_path / "feed"))
    out = tmp_path / "report.json"
    done = cli("evaluate", "--feed", tmp_path / "feed", "--truth", truth,
               "--challenger-card", model_dir, "--compare-rules", model_dir, "--json", out)
    assert done.returncode == 0, done.stderr
    report = json.loads(out.read_text())
    assert report["left_out"] == 0
    compare = report["compare_rules"]
    for key in ("rows", "frauds", "recall", "precision", "fpr", "approval_rate",
                "fraud_amount_caught_minor", "legit_amount_declined_minor"):
        assert report["challenger"][key] == compare["model_at_card_threshold"][key], key
        assert report["champion"][key] == compare["rules"][key], key
    assert report["champion"]["deciders"] == ["rules"]
    assert report["challenger"]["recall"] > 2 * report["champion"]["recall"]
