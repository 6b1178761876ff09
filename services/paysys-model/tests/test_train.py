"""Training: the card, the threshold, determinism, atomic writes and refusals."""

import hashlib
import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from conftest import FEED_DAYS, FEED_ROWS, FEED_SEED, cli, feed_table, payment, write_day
from paysys_model import card as cards
from paysys_model import synth
from paysys_model.contract import CARD_FILE, FEATURE_NAMES, FEATURES_VERSION, MODEL_FILE
from paysys_model.contract import ModelError
from paysys_model.feed import DAY_US, prepare, prepared_matrix, read_feed
from paysys_model.metrics import threshold_for_fpr
from paysys_model.train import train


def load(model_dir):
    with open(os.path.join(model_dir, MODEL_FILE), "rb") as f:
        model_bytes = f.read()
    with open(os.path.join(model_dir, CARD_FILE), "rb") as f:
        return model_bytes, json.loads(f.read())


def validation_scores(feed_dir, model_dir):
    """(scores, labels) of the validation rows, scored from the directory as the engine
    would: LightGBM's probability through the card's calibration."""
    booster, card = cards.load_model_dir(model_dir)
    rows = prepare(read_feed(feed_dir)).rows
    rows = rows.filter(pc.equal(rows["split"], "validation"))
    score = cards.score(booster, card, prepared_matrix(rows))
    return score, rows["label"].to_numpy(), card


def test_the_directory_holds_exactly_the_model_and_its_card(model_dir):
    assert sorted(os.listdir(model_dir)) == sorted([MODEL_FILE, CARD_FILE])
    assert not [n for n in os.listdir(os.path.dirname(model_dir)) if n.startswith(".")]


def test_the_card_fields(model_dir):
    model_bytes, card = load(model_dir)
    assert card["card_version"] == 1
    assert card["model_file"] == MODEL_FILE
    assert card["model_sha256"] == hashlib.sha256(model_bytes).hexdigest()
    expected = hashlib.sha256(model_bytes + cards.canonical_json(
        {"calibration": card["calibration"], "threshold": card["threshold"]}).encode()).hexdigest()
    assert card["model_version"] == "m-" + expected[:16]
    assert card["features_version"] == FEATURES_VERSION
    assert card["feature_names"] == list(FEATURE_NAMES)
    assert card["seed"] == 42 and card["target_fpr"] == 0.01
    calibration = card["calibration"]
    assert calibration["method"] == "isotonic"
    x, y = np.array(calibration["x"]), np.array(calibration["y"])
    assert len(x) == len(y) >= 2
    assert (np.diff(x) > 0).all() and (np.diff(y) >= 0).all()
    assert 0.0 <= y.min() and y.max() <= 1.0
    assert 0.0 < card["threshold"] <= 1.0
    training = card["training"]
    assert training["window"]["from"] < training["split"]["calibration_from"] \
        < training["split"]["validation_from"] < training["window"]["to"]
    rows = training["rows"]
    assert rows["train"] > rows["calibration"] > 0 and rows["validation"] > 0
    for who in ("model", "rules"):
        metrics = card["metrics"][who]
        for key in ("roc_auc", "pr_auc", "recall", "fpr", "approval_rate",
                    "fraud_amount_caught_minor", "legit_amount_declined_minor"):
            assert key in metrics, (who, key)
        for amounts in (metrics["fraud_amount_caught_minor"],
                        metrics["legit_amount_declined_minor"]):
            assert all(isinstance(v, int) for v in amounts.values())
    drift = card["drift_reference"]
    assert list(drift) == list(FEATURE_NAMES)
    for name, ref in drift.items():
        assert len(ref["shares"]) == len(ref["edges"]) + 1, name
        assert abs(sum(ref["shares"]) - 1.0) < 1e-9, name
        assert list(ref["edges"]) == sorted(set(ref["edges"])), name


def test_the_card_counts_every_labeled_row_once(feed_dir, model_dir):
    _, card = load(model_dir)
    labeled = prepare(read_feed(feed_dir)).rows
    assert sum(card["training"]["rows"].values()) == labeled.num_rows
    assert sum(card["training"]["frauds"].values()) == pc.sum(labeled["label"]).as_py()


def test_the_threshold_is_the_lowest_that_meets_the_target_fpr(feed_dir, model_dir):
    score, label, card = validation_scores(feed_dir, model_dir)
    threshold = card["threshold"]
    legit = score[label == 0]
    fpr = (legit >= threshold).mean()
    assert fpr <= card["target_fpr"]
    # Any lower threshold that declines one more legitimate payment is over the target.
    below = legit[legit < threshold]
    assert ((legit >= below.max()).mean()) > card["target_fpr"]
    metrics = card["metrics"]["model"]
    assert metrics["fpr"] == fpr
    assert metrics["recall"] == (score[label == 1] >= threshold).mean()
    # The exact amounts: the sum of the caught frauds' amounts in minor units.
    rows = prepare(read_feed(feed_dir)).rows
    rows = rows.filter(pc.equal(rows["split"], "validation"))
    caught = (label == 1) & (score >= threshold)
    currency = rows["currency"].to_numpy(zero_copy_only=False)[caught]
    amount = rows["amount_minor"].to_numpy()[caught]
    assert metrics["fraud_amount_caught_minor"] == {
        c: int(amount[currency == c].sum()) for c in sorted(set(currency))}


def test_the_planted_signal_is_learned_and_beats_the_rules(model_dir):
    _, card = load(model_dir)
    model, rules = card["metrics"]["model"], card["metrics"]["rules"]
    assert model["roc_auc"] > 0.85
    assert model["recall"] > 2 * rules["recall"]


def test_threshold_for_fpr_by_hand():
    score = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95])
    label = np.array([0, 0, 0, 0, 0, 0, 1, 0, 1, 1])
    # 7 legitimate: at 0.15, floor(1.05) = 1 may be declined (0.8); the next is 0.6, so the
    # threshold lies between 0.6 and the next higher score, 0.7.
    assert threshold_for_fpr(score, label, 0.15) == pytest.approx(0.65)
    # None may be declined: above 0.8, below 0.9.
    assert threshold_for_fpr(score, label, 0.1) == pytest.approx(0.85)
    # The top score is legitimate: nothing above it, so just above it (declines nothing).
    assert threshold_for_fpr(np.array([0.2, 0.9]), np.array([1, 0]), 0.01) > 0.9


def test_the_same_seed_gives_byte_identical_files(feed_dir, model_dir, tmp_path):
    again = str(tmp_path / "again")
    done = cli("train", "--feed", feed_dir, "--out", again, "--seed", 42)
    assert done.returncode == 0, done.stderr
    assert load(again) == load(model_dir)
    with open(os.path.join(again, CARD_FILE), "rb") as a, \
            open(os.path.join(model_dir, CARD_FILE), "rb") as b:
        assert a.read() == b.read()
    other = str(tmp_path / "other-seed")
    done = cli("train", "--feed", feed_dir, "--out", other, "--seed", 43)
    assert done.returncode == 0, done.stderr
    assert load(other)[0] != load(model_dir)[0]


def test_a_failure_midway_leaves_nothing(feed_dir, tmp_path, monkeypatch):
    out = str(tmp_path / "model")
    real = cards.write_file
    written = []

    def failing(path, data):
        written.append(path)
        if path.endswith(CARD_FILE):
            raise OSError(28, "No space left on device")
        real(path, data)

    monkeypatch.setattr(cards, "write_file", failing)
    with pytest.raises(OSError):
        train(feed_dir, out, 42, 0.01, 14, None, 7, log=lambda _: None)
    assert [os.path.basename(p) for p in written] == [MODEL_FILE, CARD_FILE]
    assert os.listdir(tmp_path) == []


def test_an_existing_model_is_never_overwritten(feed_dir, model_dir):
    before = load(model_dir)
    done = cli("train", "--feed", feed_dir, "--out", model_dir, "--seed", 1)
    assert done.returncode == 1
    assert "already exists" in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert load(model_dir) == before


def one_class_feed(folder, reason):
    """A feed whose labeled payments all share one label."""
    rows = [payment(i, synth.START_US + i * 3_600_000_000,
                    dispute_reason=reason, disputed_at=None if reason is None else
                    synth.START_US + 30 * DAY_US) for i in range(200)]
    rows.append(payment(999, synth.START_US + 40 * DAY_US))
    table = feed_table(rows)
    days = table["created_at"].cast(pa.int64()).to_numpy() // DAY_US
    for day in np.unique(days):
        write_day(folder, table.filter(pa.array(days == day)))


@pytest.mark.parametrize("reason", [None, "fraudulent"])
def test_one_class_only_is_a_one_line_error_and_no_model(tmp_path, reason):
    folder = str(tmp_path / "feed")
    one_class_feed(folder, reason)
    out = tmp_path / "model"
    done = cli("train", "--feed", folder, "--out", str(out))
    assert done.returncode == 1, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "one class only" in done.stderr
    assert not out.exists()
    assert sorted(os.listdir(tmp_path)) == ["feed"]


def test_a_feed_without_labels_is_a_one_line_error(feed_dir, tmp_path):
    out = tmp_path / "model"
    done = cli("train", "--feed", feed_dir, "--out", str(out), "--maturity-days", 1000)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [done.stderr.strip()]
    assert "no labeled payments" in done.stderr
    assert not out.exists()


@pytest.mark.parametrize("args, message", [
    (["--target-fpr", "0"], "between 0 and 1"),
    (["--target-fpr", "1.5"], "between 0 and 1"),
    (["--as-of", "yesterday"], "not a date"),
    (["--validation-days", "0"], "--validation-days >= 1"),
])
def test_bad_arguments_are_one_line_errors(feed_dir, tmp_path, args, message):
    done = cli("train", "--feed", feed_dir, "--out", str(tmp_path / "m"), *args)
    assert done.returncode == 1
    assert message in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_the_loader_refuses_what_the_engine_refuses(model_dir, tmp_path):
    import shutil

    def copy(name):
        target = tmp_path / name
        shutil.copytree(model_dir, target)
        return target

    corrupt = copy("corrupt")
    with open(corrupt / MODEL_FILE, "ab") as f:
        f.write(b"\n")
    with pytest.raises(ModelError, match="sha256"):
        cards.load_model_dir(str(corrupt))
    other = copy("other-version")
    card = json.loads((other / CARD_FILE).read_text())
    card["features_version"] = "payment-features/0"
    (other / CARD_FILE).write_text(json.dumps(card))
    with pytest.raises(ModelError, match="payment-features/0.*payment-features/1"):
        cards.load_model_dir(str(other))
    missing = copy("no-card")
    os.remove(missing / CARD_FILE)
    with pytest.raises(ModelError, match="no model-card.json"):
        cards.load_model_dir(str(missing))
    unparsable = copy("unparsable")
    (unparsable / MODEL_FILE).write_bytes(b"not a model")
    card = json.loads((unparsable / CARD_FILE).read_text())
    card["model_sha256"] = hashlib.sha256(b"not a model").hexdigest()
    (unparsable / CARD_FILE).write_text(json.dumps(card))
    with pytest.raises(ModelError, match="cannot parse"):
        cards.load_model_dir(str(unparsable))


def test_the_feed_fixture_is_what_the_constants_say(feed_dir):
    assert read_feed(feed_dir).num_rows == FEED_ROWS
    assert len(os.listdir(feed_dir)) == FEED_DAYS
    assert FEED_SEED == 7


def test_the_bench_command_reports_its_figures():
    done = cli("bench", "--rows", 20_000, "--days", 30)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout[done.stdout.index("{\n"):])
    assert result["rows"] == 20_000 and result["labeled_rows"] > 0
    assert result["prepare_and_train_wall_seconds"] > 0
    assert 50 < result["peak_rss_mib"] < 4096
    assert result["model_version"].startswith("m-")
