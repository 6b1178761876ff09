"""spark/prepare.py (Spark local mode) gives exactly the rows of the local preparation."""

import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import PACKAGE_DIR, feed_table, payment, write_day
from paysys_model import synth
from paysys_model.contract import ModelError
from paysys_model.feed import DAY_US, PREPARED_SCHEMA, prepare, read_feed

PREPARE = os.path.join(PACKAGE_DIR, "spark", "prepare.py")
OLD_COLUMNS = ("disputed_at", "dispute_reason", "rules_outcome", "features_version",
               "features", "model_version", "model_score", "model_threshold",
               "shadow_model_version", "shadow_score")

# Without Java these tests skip outside CI; under CI=true a skipped test is a failure.
if shutil.which("java") is None and os.environ.get("CI") == "true":
    raise RuntimeError("Spark needs a Java runtime (Debian: apt-get install openjdk-17-jre-headless)")
pytestmark = pytest.mark.skipif(shutil.which("java") is None,
                                reason="Spark needs a Java runtime (openjdk-17-jre-headless)")


def spark_prepare(feed, out, *args):
    return subprocess.run([sys.executable, PREPARE, "--feed", feed, "--out", out, *args],
                          capture_output=True, text=True, timeout=900)


def normalized(table):
    """The prepared rows in one order, with the prepared schema's types (Spark marks its
    columns nullable its own way)."""
    table = pa.Table.from_arrays([table[f.name].cast(f.type) for f in PREPARED_SCHEMA],
                                 schema=PREPARED_SCHEMA)
    return table.sort_by([("created_at", "ascending"), ("payment_id", "ascending")]) \
        .combine_chunks()


def test_spark_and_local_preparation_agree_exactly(tmp_path):
    feed = str(tmp_path / "feed")
    table, _ = synth.generate(6_000, 30, 11)
    synth.write_feed(table, feed)
    # A day exported before the model's columns existed, and rows of another feature version:
    # both engines must read the first as null and leave both out.
    old = feed_table([payment(i, synth.START_US - DAY_US + i) for i in range(3)])
    write_day(feed, old.select([n for n in old.column_names if n not in OLD_COLUMNS]))
    write_day(feed, feed_table([payment(7, synth.START_US - 2 * DAY_US,
                                        features_version="payment-features/0",
                                        features=[1.0])]))
    local = prepare(read_feed(feed), maturity_days=10, validation_days=5)
    out = str(tmp_path / "prepared")
    done = spark_prepare(feed, out, "--maturity-days", "10", "--validation-days", "5")
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout)
    assert summary["rows"] == local.rows.num_rows
    assert summary["as_of_us"] == local.as_of_us
    assert summary["validation_from_us"] == local.validation_from_us
    assert summary["skipped"] == local.skipped
    assert summary["skipped"]["other_features_version"] == 4
    spark_rows = normalized(pq.read_table(out))
    local_rows = normalized(local.rows)
    assert spark_rows.num_rows == local_rows.num_rows > 1000
    for name in PREPARED_SCHEMA.names:
        assert spark_rows[name].equals(local_rows[name]), name
    labels = local_rows["label"].to_numpy()
    assert 0 < labels.sum() < len(labels)
    assert set(local_rows["split"].to_pylist()) == {"train", "validation"}
    assert np.isfinite(np.column_stack([local_rows[c].to_numpy() for c in
                                        PREPARED_SCHEMA.names[7:]])).all()


def feed_without_labels(folder):
    table, _ = synth.generate(500, 5, 3)
    synth.write_feed(table, folder)


def feed_with_a_nan_feature(folder):
    features = [float("nan")] + [1.0] * 14
    write_day(folder, feed_table([payment(1, synth.START_US, features=features),
                                  payment(2, synth.START_US + 20 * DAY_US)]))


@pytest.mark.parametrize("make, message", [
    (feed_without_labels, "the feed has no labeled payments"),
    (feed_with_a_nan_feature, "1 payment(s) of features_version payment-features/1 have a "
                              "NaN or infinite feature"),
])
def test_spark_refuses_what_the_local_preparation_refuses(tmp_path, make, message):
    feed = str(tmp_path / "feed")
    make(feed)
    with pytest.raises(ModelError, match=re.escape(message)):
        prepare(read_feed(feed))
    done = spark_prepare(feed, str(tmp_path / "out"))
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1].startswith(f"prepare.py: {message}")
    assert not os.path.exists(tmp_path / "out")
