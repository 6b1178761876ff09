"""The risk model's feature preparation on Spark: the same rows as paysys_model's local
preparation (paysys_model/feed.py), for feeds that outgrow one machine.

  spark-submit services/paysys-model/spark/prepare.py --feed hdfs:///feed --out hdfs:///prepared
  python services/paysys-model/spark/prepare.py --feed FEED --out OUT      (Spark local mode)

Reads the feed's Parquet (day=*/payments.parquet), keeps the rows of paysys_model's
FEATURES_VERSION, applies the label rule (approved and created_at <= as_of - maturity; fraud iff
disputed as fraudulent or unrecognized), splits by time (the newest --validation-days UTC days
of labeled rows are validation) and explodes the feature list into one double column per
feature (`feature_<name>`). Writes Parquet rows with paysys_model.feed.PREPARED_SCHEMA and
prints a JSON summary. Only Spark's built-in functions run on the executors (no Python UDF),
so they need nothing but Spark; the driver imports paysys_model for the contract's constants.
"""

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from paysys_model.contract import (  # noqa: E402
    DEFAULT_MATURITY_DAYS,
    DEFAULT_VALIDATION_DAYS,
    FEATURE_NAMES,
    FEATURES_VERSION,
    FEED_COLUMNS,
    FRAUD_REASONS,
    ModelError,
)
from paysys_model.feed import (  # noqa: E402
    DAY_US,
    FEATURE_COLUMNS,
    PREPARED_SCHEMA,
    iso,
    parse_as_of,
)

SPARK_TYPES = {
    "payment_id": "string", "currency": "string", "amount_minor": "bigint",
    "created_at": "timestamp", "decision_outcome": "string", "disputed_at": "timestamp",
    "dispute_reason": "string", "rules_outcome": "string", "features_version": "string",
    "features": "array<double>", "model_version": "string", "model_score": "double",
    "model_threshold": "double", "shadow_model_version": "string", "shadow_score": "double",
}
assert set(SPARK_TYPES) == set(FEED_COLUMNS.names)


def session():
    from pyspark.sql import SparkSession

    return (
        SparkSession.builder.appName("paysys-model-prepare")
        # The export's `date` is timestamp[ns]; it is not used, but the schema must read.
        .config("spark.sql.legacy.parquet.nanosAsLong", "true")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.parquet.outputTimestampType", "TIMESTAMP_MICROS")
        .getOrCreate()
    )


def read_feed(spark, path):
    from pyspark.sql import functions as F

    if "://" not in path and not os.path.exists(path):
        raise ModelError(f"cannot read the feed {path}: no such file or folder")
    df = (spark.read.option("recursiveFileLookup", "true")
          .option("pathGlobFilter", "*.parquet")
          .option("mergeSchema", "true")
          .parquet(path))
    # Columns no day of the feed has yet read as null, as in the local preparation.
    return df.select(*[
        (F.col(name) if name in df.columns else F.lit(None)).cast(kind).alias(name)
        for name, kind in SPARK_TYPES.items()
    ])


def prepare(spark, feed_path, as_of_us=None, maturity_days=DEFAULT_MATURITY_DAYS,
            validation_days=DEFAULT_VALIDATION_DAYS):
    """(prepared DataFrame in created_at, payment_id order, summary dict)."""
    from pyspark.sql import functions as F

    if maturity_days < 0 or validation_days < 1:
        raise ModelError("--maturity-days must be >= 0 and --validation-days >= 1")
    df = read_feed(spark, feed_path).withColumn("created_us", F.unix_micros("created_at"))
    facts = df.agg(F.count(F.lit(1)).alias("rows"),
                   F.max("created_us").alias("newest")).first()
    if facts["rows"] == 0:
        raise ModelError("the feed has no payments")
    if as_of_us is None:
        as_of_us = int(facts["newest"])
    horizon = as_of_us - maturity_days * DAY_US
    of_version = F.coalesce(F.col("features_version") == F.lit(FEATURES_VERSION), F.lit(False))
    approved = F.coalesce(F.col("decision_outcome") == F.lit("approved"), F.lit(False))
    mature = F.col("created_us") <= F.lit(horizon)
    counts = df.agg(
        F.sum(F.when(~of_version, 1).otherwise(0)).alias("other_features_version"),
        F.sum(F.when(of_version & ~approved, 1).otherwise(0)).alias("not_approved"),
        F.sum(F.when(of_version & approved & ~mature, 1).otherwise(0)).alias("not_mature"),
    ).first()
    skipped = {k: int(counts[k] or 0) for k in ("other_features_version", "not_approved",
                                                "not_mature")}
    labeled = df.where(of_version & approved & mature)
    check = labeled.agg(
        F.count(F.lit(1)).alias("rows"),
        F.max(F.expr(f"created_us div {DAY_US}")).alias("last_day"),
        F.sum(F.when(F.col("features").isNull(), 1).otherwise(0)).alias("no_features"),
        F.sum(F.when(F.size("features") != len(FEATURE_NAMES), 1).otherwise(0)).alias("bad"),
        F.sum(F.when(F.expr("exists(features, x -> isnan(x) OR abs(x) = double('inf'))"), 1)
              .otherwise(0)).alias("not_finite"),
    ).first()
    if check["rows"] == 0:
        raise ModelError(
            f"the feed has no labeled payments: none is approved, of features_version "
            f"{FEATURES_VERSION} and created at or before {iso(horizon)} "
            f"(as_of {iso(as_of_us)} - {maturity_days} days maturity)")
    if check["no_features"]:
        raise ModelError(f"{check['no_features']} payment(s) of features_version "
                         f"{FEATURES_VERSION} have no features")
    if check["bad"]:
        raise ModelError(f"{check['bad']} payment(s) of features_version {FEATURES_VERSION} "
                         f"do not have {len(FEATURE_NAMES)} features")
    if check["not_finite"]:
        raise ModelError(f"{check['not_finite']} payment(s) of features_version "
                         f"{FEATURES_VERSION} have a NaN or infinite feature")
    validation_from_us = (int(check["last_day"]) - (validation_days - 1)) * DAY_US
    label = F.coalesce(F.col("dispute_reason").isin(*FRAUD_REASONS), F.lit(False))
    columns = [
        F.col("payment_id"), F.col("created_at"), F.col("currency"), F.col("amount_minor"),
        F.col("rules_outcome"),
        label.cast("int").alias("label"),
        F.when(F.col("created_us") >= F.lit(validation_from_us), "validation")
        .otherwise("train").alias("split"),
    ] + [F.col("features").getItem(i).alias(FEATURE_COLUMNS[i])
         for i in range(len(FEATURE_NAMES))]
    prepared = labeled.select(*columns).orderBy("created_at", "payment_id")
    assert prepared.columns == PREPARED_SCHEMA.names
    summary = {"rows": int(check["rows"]), "as_of": iso(as_of_us), "as_of_us": as_of_us,
               "validation_from": iso(validation_from_us),
               "validation_from_us": validation_from_us, "skipped": skipped}
    return prepared, summary


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--feed", required=True, help="the feed folder")
    parser.add_argument("--out", required=True, help="output folder (Parquet part files)")
    parser.add_argument("--as-of", help="YYYY-MM-DD or UTC time (default: newest created_at)")
    parser.add_argument("--maturity-days", type=int, default=DEFAULT_MATURITY_DAYS)
    parser.add_argument("--validation-days", type=int, default=DEFAULT_VALIDATION_DAYS)
    args = parser.parse_args(argv)
    spark = None
    try:
        as_of_us = parse_as_of(args.as_of) if args.as_of else None
        spark = session()
        prepared, summary = prepare(spark, args.feed, as_of_us, args.maturity_days,
                                    args.validation_days)
        prepared.write.mode("overwrite").parquet(args.out)
        print(json.dumps(summary, indent=2))
    except ModelError as e:
        print(f"prepare.py: {e}", file=sys.stderr)
        return 1
    except Exception as e:  # Spark's own errors (unreadable files...), in one line
        text = str(e).strip()
        print(f"prepare.py: {type(e).__name__}: {text.splitlines()[0] if text else ''}",
              file=sys.stderr)
        return 1
    finally:
        if spark is not None:
            spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
