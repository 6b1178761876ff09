"""Shared fixtures: small feeds in the export's exact schema (paysys_model.synth) and a model
trained once per session."""

import os
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from paysys_model import synth
from paysys_model.contract import FEATURE_NAMES, FEATURES_VERSION
from paysys_model.feed import DAY_US

PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPO = os.path.dirname(os.path.dirname(PACKAGE_DIR))

# The training feed: 40,000 payments over 35 days; the hold-out: another seed, later days.
FEED_ROWS, FEED_DAYS, FEED_SEED = 40_000, 35, 7
HOLDOUT_START_US = synth.START_US + FEED_DAYS * DAY_US


def cli(*args):
    """Runs `python -m paysys_model ARGS` as a user would; returns the CompletedProcess."""
    env = dict(os.environ, PYTHONPATH=PACKAGE_DIR)
    return subprocess.run([sys.executable, "-m", "paysys_model", *map(str, args)],
                          capture_output=True, text=True, env=env, timeout=600)


@pytest.fixture(scope="session")
def feed_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("feed")
    feed, _ = synth.generate(FEED_ROWS, FEED_DAYS, FEED_SEED)
    synth.write_feed(feed, str(path))
    return str(path)


@pytest.fixture(scope="session")
def holdout(tmp_path_factory):
    """(feed dir, truth file) of a later, differently seeded simulated hold-out."""
    path = tmp_path_factory.mktemp("holdout")
    feed, truth = synth.generate(20_000, 10, FEED_SEED + 100, start_us=HOLDOUT_START_US)
    synth.write_feed(feed, str(path / "feed"))
    pq.write_table(truth, str(path / "truth.parquet"))
    return str(path / "feed"), str(path / "truth.parquet")


@pytest.fixture(scope="session")
def model_dir(feed_dir, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("models") / "m")
    done = cli("train", "--feed", feed_dir, "--out", out, "--seed", 42)
    assert done.returncode == 0, done.stderr
    return out


def payment(n, created_us, **fields):
    """One row of the export's schema with plain defaults: approved, undisputed, of this
    package's features_version, `n` making the id (and the amount) distinct."""
    row = {
        "date": created_us * 1000, "currency": "USD", "amount": (1000 + n) / 100,
        "encoded_user_id": b"payer", "payment_id": f"00000000-0000-4000-8000-{n:012d}",
        "amount_minor": 1000 + n, "currency_exponent": 2, "amount_decimal": None,
        "payee_id": "00000000-0000-4000-8000-000000000001", "status": "approved",
        "decision_outcome": "approved", "created_at": created_us,
        "decided_at": created_us + 1000, "disputed_at": None, "dispute_reason": None,
        "rules_outcome": "approved", "features_version": FEATURES_VERSION,
        "features": [float(n + i) for i in range(len(FEATURE_NAMES))],
        "model_version": None, "model_score": None, "model_threshold": None,
        "shadow_model_version": None, "shadow_score": None,
    }
    row.update(fields)
    return row


def feed_table(rows):
    """A table in the export's exact schema from payment() rows."""
    from decimal import Decimal

    columns = []
    for field in synth.EXPORT_SCHEMA:
        values = [r[field.name] for r in rows]
        if field.name == "amount_decimal":
            values = [Decimal(r["amount_minor"]).scaleb(-2) for r in rows]
        columns.append(pa.array(values, field.type))
    return pa.Table.from_arrays(columns, schema=synth.EXPORT_SCHEMA)


def write_day(folder, table):
    """Writes one day file of the feed layout (day taken from the first row)."""
    first = int(table["created_at"].cast(pa.int64())[0].as_py())
    day = str(np.datetime64(first // DAY_US, "D"))
    os.makedirs(os.path.join(folder, f"day={day}"), exist_ok=True)
    pq.write_table(table, os.path.join(folder, f"day={day}", "payments.parquet"))
