"""The label rule, the time split and reading the feed (local preparation)."""

import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import feed_table, payment, write_day
from paysys_model import synth
from paysys_model.contract import FEATURE_NAMES, ModelError
from paysys_model.feed import DAY_US, FEATURE_COLUMNS, PREPARED_SCHEMA, prepare, read_feed

T0 = synth.START_US  # 2026-10-01T00:00:00Z
HOUR = 3_600_000_000


def prepared(rows, tmp_path, **kwargs):
    folder = str(tmp_path / "feed")
    table = feed_table(rows)
    days = table["created_at"].cast(pa.int64()).to_numpy() // DAY_US
    for day in np.unique(days):
        write_day(folder, table.filter(pa.array(days == day)))
    return prepare(read_feed(folder), **kwargs)


def by_id(prep):
    return {r["payment_id"][-3:]: r for r in prep.rows.to_pylist()}


def test_the_label_rule(tmp_path):
    as_of = T0 + 30 * DAY_US
    horizon = as_of - 14 * DAY_US
    rows = [
        payment(1, T0, dispute_reason="fraudulent", disputed_at=T0 + DAY_US),
        payment(2, T0 + HOUR, dispute_reason="unrecognized", disputed_at=T0 + DAY_US),
        payment(3, T0 + 2 * HOUR, dispute_reason="product_not_received", disputed_at=T0 + DAY_US),
        payment(4, T0 + 3 * HOUR, dispute_reason="duplicate", disputed_at=T0 + DAY_US),
        payment(5, T0 + 4 * HOUR),  # undisputed and mature: legitimate
        payment(6, T0 + 5 * HOUR, decision_outcome="declined", status="declined",
                rules_outcome="declined"),  # never executed: no label
        payment(7, T0 + 6 * HOUR, features_version="payment-features/0"),
        payment(8, horizon),  # exactly at the maturity horizon: labeled
        payment(9, horizon + 1, dispute_reason="fraudulent"),  # one microsecond too young
        payment(10, T0 + 7 * HOUR, decision_outcome=None, status="pending"),
        payment(11, as_of),  # defines as_of
    ]
    prep = prepared(rows, tmp_path)
    assert prep.as_of_us == as_of
    labels = {k: r["label"] for k, r in by_id(prep).items()}
    assert labels == {"001": 1, "002": 1, "003": 0, "004": 0, "005": 0, "008": 0}
    assert prep.skipped == {"other_features_version": 1, "not_approved": 2, "not_mature": 2}


def test_as_of_and_maturity_are_taken_from_the_arguments(tmp_path):
    rows = [payment(i, T0 + i * DAY_US) for i in range(1, 11)]
    prep = prepared(rows, tmp_path, as_of_us=T0 + 8 * DAY_US, maturity_days=3)
    assert sorted(by_id(prep)) == ["001", "002", "003", "004", "005"]


def test_the_time_split_keeps_the_newest_days_for_validation(tmp_path):
    # Two payments a day for 20 days, at 01:00 and 23:00; labeled up to day 19.
    rows = []
    for day in range(20):
        rows += [payment(2 * day, T0 + day * DAY_US + HOUR),
                 payment(2 * day + 1, T0 + day * DAY_US + 23 * HOUR)]
    rows.append(payment(99, T0 + 33 * DAY_US + 23 * HOUR))  # as_of: day 19 23:00 is mature
    prep = prepared(rows, tmp_path, validation_days=5)
    table = prep.rows
    split = table["split"].to_pylist()
    created = table["created_at"].cast(pa.int64()).to_numpy()
    assert prep.validation_from_us == T0 + 15 * DAY_US
    assert split == ["train"] * 30 + ["validation"] * 10
    assert created[np.array(split) == "train"].max() < prep.validation_from_us
    assert created[np.array(split) == "validation"].min() >= prep.validation_from_us
    assert list(created) == sorted(created)


def test_features_are_exploded_in_feature_name_order(tmp_path):
    rows = [payment(1, T0), payment(2, T0 + 20 * DAY_US)]
    prep = prepared(rows, tmp_path)
    assert prep.rows.schema == PREPARED_SCHEMA
    row = prep.rows.to_pylist()[0]
    assert [row[c] for c in FEATURE_COLUMNS] == [float(1 + i) for i in range(len(FEATURE_NAMES))]
    assert row["amount_minor"] == 1001 and row["currency"] == "USD"


def test_days_exported_before_the_model_columns_read_as_another_version(tmp_path):
    folder = str(tmp_path / "feed")
    old = feed_table([payment(1, T0)])
    old = old.select([n for n in old.column_names if n not in (
        "disputed_at", "dispute_reason", "rules_outcome", "features_version", "features",
        "model_version", "model_score", "model_threshold", "shadow_model_version",
        "shadow_score")])
    write_day(folder, old)
    write_day(folder, feed_table([payment(2, T0 + DAY_US)]))
    write_day(folder, feed_table([payment(3, T0 + 20 * DAY_US)]))
    prep = prepare(read_feed(folder))
    assert [r["payment_id"][-3:] for r in prep.rows.to_pylist()] == ["002"]
    assert prep.skipped["other_features_version"] == 1


@pytest.mark.parametrize("features, message", [
    ([1.0, 2.0], "has 2 features, expected 15"),
    (None, "have no features"),
    ([float("nan")] + [1.0] * 14, "have a NaN or infinite feature"),
    ([float("inf")] + [1.0] * 14, "have a NaN or infinite feature"),
])
def test_a_feature_vector_of_the_wrong_length_is_refused(tmp_path, features, message):
    rows = [payment(1, T0, features=features), payment(2, T0 + 20 * DAY_US)]
    with pytest.raises(ModelError, match=message):
        prepared(rows, tmp_path)


def test_unreadable_feeds_are_one_line_errors(tmp_path):
    with pytest.raises(ModelError, match="no such file or folder"):
        read_feed(str(tmp_path / "missing"))
    os.makedirs(tmp_path / "empty")
    with pytest.raises(ModelError, match="no Parquet files"):
        read_feed(str(tmp_path / "empty"))
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "payments.parquet").write_bytes(b"not parquet")
    with pytest.raises(ModelError, match="not a Parquet file"):
        read_feed(str(tmp_path / "bad"))
    (tmp_path / "other").mkdir()
    pq.write_table(pa.table({"x": [1]}), str(tmp_path / "other" / "p.parquet"))
    with pytest.raises(ModelError, match="missing column"):
        read_feed(str(tmp_path / "other"))
