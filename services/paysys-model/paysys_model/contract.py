"""The shared contract with the Rust side, in one place: feature names, the feed's columns,
the label rule's reasons and the model directory's file names.

`FEATURE_NAMES` and `FEATURES_VERSION` mirror services/paysys-core/src/features.rs; a test
reads that file's text and fails when the two differ. Nothing here (or anywhere in the
package) names a fraud pattern: the features are generic payment/payer/payee/method history.
"""

import pyarrow as pa

FEATURES_VERSION = "payment-features/1"

FEATURE_NAMES = (
    "amount_minor",
    "log_amount_minor",
    "currency_numeric",
    "hour_utc",
    "weekday_utc",
    "velocity_count",
    "velocity_total_minor",
    "payer_payment_count",
    "payer_age_seconds",
    "amount_to_payer_mean",
    "new_payee",
    "new_payment_method",
    "method_payment_count",
    "payee_window_count",
    "payer_is_payee",
)

# Every reason the API accepts; a dispute for one of FRAUD_REASONS labels its payment fraud.
DISPUTE_REASONS = ("fraudulent", "product_not_received", "duplicate", "unrecognized", "other")
FRAUD_REASONS = ("fraudulent", "unrecognized")

DEFAULT_MATURITY_DAYS = 14
DEFAULT_VALIDATION_DAYS = 7
DEFAULT_TARGET_FPR = 0.01
DEFAULT_SEED = 42

# The model directory (contract: exactly these two files).
MODEL_FILE = "model.txt"
CARD_FILE = "model-card.json"
CARD_VERSION = 1

# LightGBM threads, fixed: with deterministic=True the same seed and data give the same
# model.txt byte for byte (a thread count is part of what makes a run repeatable).
NUM_THREADS = 2

UTC_MICROS = pa.timestamp("us", tz="UTC")
FEATURES_TYPE = pa.list_(pa.field("item", pa.float64(), nullable=False))

# The feed's columns this package reads, with their contract types (docs/data-feed.md and the
# risk model's additions). Days exported before a column existed read it as null.
FEED_COLUMNS = pa.schema([
    pa.field("payment_id", pa.string()),
    pa.field("currency", pa.string()),
    pa.field("amount_minor", pa.int64()),
    pa.field("created_at", UTC_MICROS),
    pa.field("decision_outcome", pa.string()),
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

# Columns a file must have to be read at all: the export's own, present in every day.
REQUIRED_COLUMNS = ("payment_id", "currency", "amount_minor", "created_at", "decision_outcome")


class ModelError(Exception):
    """Bad input or a refused model, reported in one line with exit status 1."""
