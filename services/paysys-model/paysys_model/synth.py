"""A synthetic data feed in the export's exact schema, for the tests and the benchmark.

It is not the traffic simulator (services/paysys-sim tells a real story through the serving
code); it is a fast, seeded table with a planted signal: fraudulent rows draw some generic
features from shifted distributions (larger amounts relative to the payer's mean, new payees
and payment methods, more velocity, younger payers). Their feature vectors follow
payment-features/1's names; the hour and weekday features are those of created_at. Fraud that
was approved is disputed (fraudulent or unrecognized) 1-20 days later unless that is after the
feed's end; a few legitimate approved payments get other disputes (noise).
"""

import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .contract import FEATURE_NAMES, FEATURES_TYPE, FEATURES_VERSION, UTC_MICROS
from .feed import DAY_US

# The export's schema (services/paysys-feed/src/export/columns.rs) plus the risk model's
# columns (the contract's table), in that order.
EXPORT_SCHEMA = pa.schema([
    pa.field("date", pa.timestamp("ns", tz="UTC"), nullable=False),
    pa.field("currency", pa.string(), nullable=False),
    pa.field("amount", pa.float64(), nullable=False),
    pa.field("encoded_user_id", pa.binary(), nullable=False),
    pa.field("payment_id", pa.string(), nullable=False),
    pa.field("amount_minor", pa.int64(), nullable=False),
    pa.field("currency_exponent", pa.int32(), nullable=False),
    pa.field("amount_decimal", pa.decimal128(38, 4), nullable=False),
    pa.field("payee_id", pa.string(), nullable=False),
    pa.field("status", pa.string(), nullable=False),
    pa.field("decision_outcome", pa.string()),
    pa.field("created_at", UTC_MICROS, nullable=False),
    pa.field("decided_at", UTC_MICROS),
    pa.field("disputed_at", UTC_MICROS),
    pa.field("dispute_reason", pa.string()),
    pa.field("rules_outcome", pa.string()),
    pa.field("features_version", pa.string()),
    pa.field("features", FEATURES_TYPE),
    pa.field("model_version", pa.string()),
    pa.field("model_score", pa.float64()),
    pa.field("model_threshold", pa.float64()),
    pa.field("shadow_model_version", pa.string()),
    pa.field("shadow_score", pa.float64()),
])

CURRENCIES = (("USD", 2, 840), ("EUR", 2, 978), ("JPY", 0, 392))
START_US = 1_790_812_800_000_000  # 2026-10-01T00:00:00Z
RULES_MAX_MINOR = 60_000
RULES_MAX_VELOCITY = 4


def generate(rows, days, seed, fraud_share=0.02, approve_share=0.95, start_us=START_US):
    """(feed table in EXPORT_SCHEMA, truth table) of `rows` payments over `days` days.

    decision_outcome is independent of the rules (as a champion that is not the rules would
    decide: approve_share of payments approved at random), so the rules' own decisions
    (rules_outcome: decline above RULES_MAX_MINOR or at RULES_MAX_VELOCITY earlier payments in
    the window) can be measured on approved, labeled payments."""
    rng = np.random.default_rng(seed)
    n = rows
    created = np.sort(rng.integers(start_us, start_us + days * DAY_US, n, dtype=np.int64))
    # Strictly increasing, so (created_at) alone orders the rows.
    created = created + np.arange(n, dtype=np.int64) % 1000
    created = np.maximum.accumulate(created)
    fraud = rng.random(n) < fraud_share
    payers = max(20, n // 20)
    payer = rng.integers(0, payers, n)
    payee = np.where(fraud, rng.integers(0, 50, n), rng.integers(0, max(10, n // 100), n))
    currency_index = payer % len(CURRENCIES)
    exponent = np.array([c[1] for c in CURRENCIES], np.int64)[currency_index]
    numeric = np.array([c[2] for c in CURRENCIES], np.float64)[currency_index]

    def shifted(legit, odd):
        return np.where(fraud, odd, legit)

    base = rng.lognormal(np.log(3000.0), 0.9, n)
    amount_major_cents = shifted(base, rng.lognormal(np.log(5000.0), 1.0, n))
    amount_minor = np.maximum(1, np.round(amount_major_cents)).astype(np.int64)
    velocity_count = shifted(rng.poisson(0.8, n), rng.poisson(1.4, n)).astype(np.float64)
    velocity_total = velocity_count * rng.lognormal(np.log(3000.0), 0.5, n).round()
    payer_count = shifted(rng.poisson(25, n), rng.poisson(15, n)).astype(np.float64)
    payer_age = shifted(rng.exponential(90 * 86400.0, n), rng.exponential(40 * 86400.0, n))
    to_mean = shifted(rng.lognormal(0.0, 0.35, n), rng.lognormal(0.4, 0.5, n))
    new_payee = (rng.random(n) < shifted(np.full(n, 0.12), np.full(n, 0.3))).astype(float)
    new_method = (rng.random(n) < shifted(np.full(n, 0.04), np.full(n, 0.2))).astype(float)
    method_count = shifted(rng.poisson(15, n), rng.poisson(8, n)).astype(np.float64)
    payee_window = rng.poisson(2.0, n).astype(np.float64)
    payer_is_payee = (rng.random(n) < 0.001).astype(float)
    seconds = created // 1_000_000
    hour = ((seconds // 3600) % 24).astype(np.float64)
    weekday = (((seconds // 86400) + 3) % 7).astype(np.float64)  # 1970-01-01 was a Thursday
    amount_f = amount_minor.astype(np.float64)
    matrix = np.column_stack([
        amount_f, np.log1p(amount_f), numeric, hour, weekday, velocity_count, velocity_total,
        payer_count, payer_age, to_mean, new_payee, new_method, method_count, payee_window,
        payer_is_payee,
    ])
    assert matrix.shape[1] == len(FEATURE_NAMES)

    rules_declined = (amount_minor > RULES_MAX_MINOR) | (velocity_count >= RULES_MAX_VELOCITY)
    approved = rng.random(n) < approve_share
    end_us = int(created.max())
    delay = (rng.uniform(1.0, 20.0, n) * DAY_US).astype(np.int64)
    disputed_at = created + delay
    fraud_dispute = fraud & approved & (disputed_at <= end_us)
    noise_dispute = ~fraud & approved & (rng.random(n) < 0.005) & (disputed_at <= end_us)
    fraud_reasons = np.where(rng.random(n) < 0.8, "fraudulent", "unrecognized")
    noise_reasons = np.array(["product_not_received", "duplicate", "other"])[rng.integers(0, 3, n)]
    reason = np.where(fraud_dispute, fraud_reasons, np.where(noise_dispute, noise_reasons, None))
    has_dispute = fraud_dispute | noise_dispute

    ids = uuids(rng, n)
    payee_ids = uuids(np.random.default_rng(seed + 1), int(payee.max()) + 1)[payee]
    outcome = np.where(approved, "approved", "declined")
    unscaled = amount_minor * 10 ** (4 - exponent)
    columns = {
        "date": pa.array(created * 1000, pa.timestamp("ns", tz="UTC")),
        "currency": pa.array(np.array([c[0] for c in CURRENCIES])[currency_index]),
        "amount": pa.array(amount_minor / 10.0 ** exponent),
        "encoded_user_id": pa.array([b"payer-%d" % p for p in payer.tolist()], pa.binary()),
        "payment_id": pa.array(ids),
        "amount_minor": pa.array(amount_minor),
        "currency_exponent": pa.array(exponent.astype(np.int32)),
        "amount_decimal": decimal128(unscaled),
        "payee_id": pa.array(payee_ids),
        "status": pa.array(outcome),
        "decision_outcome": pa.array(outcome),
        "created_at": pa.array(created, UTC_MICROS),
        "decided_at": pa.array(created + 50_000, UTC_MICROS),
        "disputed_at": pa.array(np.where(has_dispute, disputed_at, 0), UTC_MICROS,
                                mask=~has_dispute),
        "dispute_reason": pa.array(reason.tolist(), pa.string()),
        "rules_outcome": pa.array(np.where(rules_declined, "declined", "approved")),
        "features_version": pa.array(np.full(n, FEATURES_VERSION)),
        "features": pa.ListArray.from_arrays(
            pa.array(np.arange(0, n * len(FEATURE_NAMES) + 1, len(FEATURE_NAMES), np.int32)),
            pa.array(matrix.reshape(-1))).cast(FEATURES_TYPE),
    }
    for name in ("model_version", "shadow_model_version"):
        columns[name] = pa.nulls(n, pa.string())
    for name in ("model_score", "model_threshold", "shadow_score"):
        columns[name] = pa.nulls(n, pa.float64())
    feed = pa.Table.from_arrays([columns[f.name] for f in EXPORT_SCHEMA], schema=EXPORT_SCHEMA)
    truth = pa.table({
        "payment_id": pa.array(ids),
        "is_fraud": pa.array(fraud),
        "pattern": pa.array(np.where(fraud, "planted", "legit")),
    })
    return feed, truth


def uuids(rng, n):
    raw = rng.integers(0, 256, (n, 16), dtype=np.uint8)
    raw[:, 6] = (raw[:, 6] & 0x0F) | 0x40  # version 4
    raw[:, 8] = (raw[:, 8] & 0x3F) | 0x80  # RFC 4122 variant
    text = np.array([r.tobytes().hex() for r in raw])
    return np.array([f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}" for h in text])


def decimal128(unscaled):
    """decimal(38, 4) values from int64 unscaled integers (two's complement, little-endian)."""
    unscaled = np.asarray(unscaled, dtype=np.int64)
    words = np.empty((len(unscaled), 2), dtype=np.int64)
    words[:, 0] = unscaled
    words[:, 1] = np.where(unscaled < 0, -1, 0)
    return pa.Array.from_buffers(pa.decimal128(38, 4), len(unscaled),
                                 [None, pa.py_buffer(words.tobytes())])


def write_feed(feed, out):
    """Writes `feed` as the export does: out/day=YYYY-MM-DD/payments.parquet per UTC day."""
    created = feed["created_at"].cast(pa.int64()).to_numpy()
    days = created // DAY_US
    for day in np.unique(days):
        idx = np.flatnonzero(days == day)
        name = str(np.datetime64(int(day), "D"))
        folder = os.path.join(out, f"day={name}")
        os.makedirs(folder, exist_ok=True)
        pq.write_table(feed.take(pa.array(idx)), os.path.join(folder, "payments.parquet"))


def with_columns(table, **columns):
    """`table` with some columns replaced (same names, same types)."""
    for name, values in columns.items():
        i = table.schema.get_field_index(name)
        table = table.set_column(i, table.schema.field(name),
                                 pa.array(values, table.schema.field(name).type))
    return table
