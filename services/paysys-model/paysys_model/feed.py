"""Reading the data feed and the local feature preparation (the Spark job in
spark/prepare.py does the same on a cluster; a test checks both give the same rows).

Preparation, in order:
1. keep the rows whose `features_version` is the one this package was built for;
2. the label rule: a row is labeled iff `decision_outcome = 'approved'` and
   `created_at <= as_of - maturity` (`as_of` = the newest `created_at` in the feed unless
   given); its label is 1 iff `dispute_reason` is fraudulent or unrecognized. A younger payment
   is unknown, not legitimate, and a declined one never executed, so neither gets a label;
3. the time split: the newest `validation_days` UTC days of labeled rows (counted back from the
   day of the newest labeled row) are validation, the older ones train;
4. the feature list exploded into one double column per feature (`feature_<name>`).
"""

import os
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .contract import (
    FEATURE_NAMES,
    FEATURES_VERSION,
    FEED_COLUMNS,
    FRAUD_REASONS,
    REQUIRED_COLUMNS,
    UTC_MICROS,
    ModelError,
)

DAY_US = 86_400_000_000

# A prepared row's column for each feature (prefixed: `amount_minor` is also the payment's own
# exact amount).
FEATURE_COLUMNS = tuple(f"feature_{name}" for name in FEATURE_NAMES)

# The prepared rows, in (created_at, payment_id) order: local and Spark write exactly this.
PREPARED_SCHEMA = pa.schema(
    [
        pa.field("payment_id", pa.string()),
        pa.field("created_at", UTC_MICROS),
        pa.field("currency", pa.string()),
        pa.field("amount_minor", pa.int64()),
        pa.field("rules_outcome", pa.string()),
        pa.field("label", pa.int32()),
        pa.field("split", pa.string()),
    ]
    + [pa.field(name, pa.float64()) for name in FEATURE_COLUMNS]
)


def feed_files(path):
    """The Parquet files of a feed folder (searched recursively, names starting with '.' or
    '_' skipped, as the export's readers do) or the one file given, in name order."""
    if not os.path.exists(path):
        raise ModelError(f"cannot read the feed {path}: no such file or folder")
    if os.path.isfile(path):
        return [path]
    files = []
    for root, dirs, names in os.walk(path):
        dirs[:] = sorted(d for d in dirs if not d.startswith((".", "_")))
        files += [os.path.join(root, n) for n in names
                  if n.endswith(".parquet") and not n.startswith((".", "_"))]
    if not files:
        raise ModelError(f"the feed {path} has no Parquet files (expected day=*/payments.parquet)")
    return sorted(files)


def read_feed(path):
    """The feed's rows with FEED_COLUMNS (columns a day was exported without read as null)."""
    tables = [read_file(f) for f in feed_files(path)]
    return pa.concat_tables(tables)


def read_file(path):
    try:
        schema = pq.read_schema(path)
    except (pa.ArrowException, OSError) as e:
        raise ModelError(f"{path}: not a Parquet file: {one_line(e)}")
    missing = [c for c in REQUIRED_COLUMNS if c not in schema.names]
    if missing:
        raise ModelError(f"{path}: not a payments file: missing column(s): {', '.join(missing)}")
    present = [f.name for f in FEED_COLUMNS if f.name in schema.names]
    try:
        table = pq.read_table(path, columns=present)
    except (pa.ArrowException, OSError) as e:
        raise ModelError(f"{path}: {one_line(e)}")
    columns = []
    for field in FEED_COLUMNS:
        if field.name not in present:
            columns.append(pa.nulls(table.num_rows, field.type))
            continue
        column = table[field.name]
        try:
            columns.append(column.cast(field.type) if column.type != field.type else column)
        except (pa.ArrowException, ValueError) as e:
            raise ModelError(f"{path}: column {field.name} is {column.type}, expected "
                             f"{field.type}: {one_line(e)}")
    if table.num_rows and table["created_at"].null_count:
        raise ModelError(f"{path}: created_at has nulls")
    return pa.Table.from_arrays(columns, schema=FEED_COLUMNS)


def one_line(e):
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


@dataclass
class Preparation:
    """The prepared rows and the facts of the preparation (for the card and the logs)."""

    rows: pa.Table
    as_of_us: int
    maturity_days: int
    validation_from_us: int
    skipped: dict


def micros(column):
    return np.asarray(column.cast(pa.int64()).to_numpy(zero_copy_only=False), dtype=np.int64)


def label_rule(feed, as_of_us, maturity_days):
    """The label rule's two conditions and its bounds: (approved, mature, as_of_us, horizon):
    approved = decision_outcome is 'approved'; mature = created_at <= horizon = as_of -
    maturity (as_of: the newest created_at unless given)."""
    created = micros(feed["created_at"])
    if as_of_us is None:
        as_of_us = int(created.max())
    horizon = as_of_us - maturity_days * DAY_US
    approved = pc.fill_null(pc.equal(feed["decision_outcome"], "approved"), False)
    return approved.to_numpy(zero_copy_only=False), created <= horizon, as_of_us, horizon


def is_fraud(dispute_reason):
    """The label of labeled rows: 1 iff disputed for one of FRAUD_REASONS."""
    fraud = pc.fill_null(pc.is_in(dispute_reason, pa.array(FRAUD_REASONS)), False)
    return fraud.to_numpy(zero_copy_only=False).astype(np.int32)


def prepare(feed, as_of_us=None, maturity_days=14, validation_days=7):
    """Local preparation of `feed` (a table with FEED_COLUMNS): see the module's doc."""
    if maturity_days < 0 or validation_days < 1:
        raise ModelError("--maturity-days must be >= 0 and --validation-days >= 1")
    if feed.num_rows == 0:
        raise ModelError("the feed has no payments")
    approved, mature, as_of_us, horizon = label_rule(feed, as_of_us, maturity_days)
    of_version = pc.fill_null(pc.equal(feed["features_version"], FEATURES_VERSION), False)
    of_version = of_version.to_numpy(zero_copy_only=False)
    labeled = of_version & approved & mature
    skipped = {
        "other_features_version": int((~of_version).sum()),
        "not_approved": int((of_version & ~approved).sum()),
        "not_mature": int((of_version & approved & ~mature).sum()),
    }
    if not labeled.any():
        raise ModelError(
            f"the feed has no labeled payments: none is approved, of features_version "
            f"{FEATURES_VERSION} and created at or before {iso(horizon)} "
            f"(as_of {iso(as_of_us)} - {maturity_days} days maturity)")
    rows = feed.filter(pa.array(labeled))
    rows = rows.take(pc.sort_indices(rows, [("created_at", "ascending"),
                                            ("payment_id", "ascending")]))
    created = micros(rows["created_at"])
    days = created // DAY_US
    validation_from_us = int(days.max() - (validation_days - 1)) * DAY_US
    split = np.where(created >= validation_from_us, "validation", "train")
    columns = [
        rows["payment_id"], rows["created_at"], rows["currency"], rows["amount_minor"],
        rows["rules_outcome"], pa.array(is_fraud(rows["dispute_reason"]), pa.int32()),
        pa.array(split, pa.string()),
    ]
    matrix = feature_matrix(rows["features"])
    columns += [pa.array(matrix[:, i], pa.float64()) for i in range(len(FEATURE_NAMES))]
    return Preparation(
        rows=pa.Table.from_arrays(columns, schema=PREPARED_SCHEMA),
        as_of_us=as_of_us,
        maturity_days=maturity_days,
        validation_from_us=validation_from_us,
        skipped=skipped,
    )


def feature_matrix(features):
    """A (rows, features) float64 matrix of a column of feature lists of this version."""
    features = features.combine_chunks() if isinstance(features, pa.ChunkedArray) else features
    n = len(FEATURE_NAMES)
    if features.null_count:
        raise ModelError(f"{features.null_count} payment(s) of features_version "
                         f"{FEATURES_VERSION} have no features")
    lengths = pc.list_value_length(features).to_numpy(zero_copy_only=False)
    if len(lengths) and (lengths != n).any():
        bad = int(lengths[lengths != n][0])
        raise ModelError(f"a payment of features_version {FEATURES_VERSION} has {bad} features, "
                         f"expected {n}")
    values = pc.list_flatten(features).to_numpy(zero_copy_only=False)
    matrix = np.asarray(values, dtype=np.float64).reshape(len(features), n)
    # The engine computes every feature from integers and times: a NaN or an infinity means
    # a broken writer, not a payment to learn from.
    bad = ~np.isfinite(matrix).all(axis=1)
    if bad.any():
        raise ModelError(f"{int(bad.sum())} payment(s) of features_version {FEATURES_VERSION} "
                         f"have a NaN or infinite feature")
    return matrix


def prepared_matrix(rows):
    """The feature columns of prepared rows as a (rows, features) float64 matrix."""
    if rows.num_rows == 0:
        return np.zeros((0, len(FEATURE_NAMES)))
    return np.column_stack([rows[name].to_numpy(zero_copy_only=False).astype(np.float64)
                            for name in FEATURE_COLUMNS])


def iso(us):
    """Microseconds since the epoch as RFC 3339 UTC text."""
    return str(np.datetime64(int(us), "us")) + "Z"


def parse_as_of(text):
    """--as-of: an RFC 3339 time or a date (its 00:00 UTC), as microseconds since the epoch."""
    try:
        value = np.datetime64(text.rstrip("Z").replace("+00:00", ""), "us")
    except ValueError:
        raise ModelError(f"--as-of '{text}' is not a date (YYYY-MM-DD) or UTC time")
    return int(value.astype(np.int64))
