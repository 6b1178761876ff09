"""python -m paysys_model {train,evaluate,bench} ...: see docs/risk-model.md."""

import argparse
import sys

from .contract import (
    DEFAULT_MATURITY_DAYS,
    DEFAULT_SEED,
    DEFAULT_TARGET_FPR,
    DEFAULT_VALIDATION_DAYS,
    ModelError,
)


def parser():
    p = argparse.ArgumentParser(prog="python -m paysys_model",
                                description="Train and evaluate the paysys risk model.")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a model from the data feed")
    t.add_argument("--feed", required=True, help="the feed folder (day=*/payments.parquet)")
    t.add_argument("--out", required=True, help="the model directory to write (must not exist)")
    t.add_argument("--seed", type=int, default=DEFAULT_SEED)
    t.add_argument("--target-fpr", type=float, default=DEFAULT_TARGET_FPR,
                   help="false-positive rate the threshold is chosen for, on validation")
    t.add_argument("--maturity-days", type=int, default=DEFAULT_MATURITY_DAYS,
                   help="payments younger than this (before --as-of) get no label")
    t.add_argument("--as-of", help="YYYY-MM-DD or UTC time (default: the newest created_at)")
    t.add_argument("--validation-days", type=int, default=DEFAULT_VALIDATION_DAYS,
                   help="the newest days of labeled payments kept for validation")

    e = sub.add_parser("evaluate", help="compare champion and challenger on labeled data")
    e.add_argument("--feed", required=True)
    e.add_argument("--truth", help="Parquet of payment_id, is_fraud, pattern (simulated "
                                   "hold-outs): ground truth for every payment instead of "
                                   "disputes")
    e.add_argument("--challenger-card", help="the shadow model's card or directory (its "
                                             "threshold and version)")
    e.add_argument("--compare-rules", metavar="MODEL_DIR",
                   help="score MODEL_DIR offline and compare it with the default rules at the "
                        "rules' own FPR (or 1 %%, whichever is higher)")
    e.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    e.add_argument("--maturity-days", type=int, default=DEFAULT_MATURITY_DAYS)
    e.add_argument("--as-of")

    b = sub.add_parser("bench", help="time prepare+train on a synthetic feed")
    b.add_argument("--rows", type=int, default=1_000_000)
    b.add_argument("--days", type=int, default=42)
    b.add_argument("--seed", type=int, default=DEFAULT_SEED)
    b.add_argument("--dir", help="work folder (default: a temporary one, removed)")
    return p


def main(argv=None):
    args = parser().parse_args(argv)
    try:
        if args.command == "train":
            from .feed import parse_as_of
            from .train import train

            train(args.feed, args.out, args.seed, args.target_fpr, args.maturity_days,
                  parse_as_of(args.as_of) if args.as_of else None, args.validation_days)
        elif args.command == "evaluate":
            from .evaluate import run

            run(args)
        else:
            from .bench import run

            run(args)
    except ModelError as e:
        print(f"paysys_model {args.command}: {e}", file=sys.stderr)
        return 1
    except Exception as e:  # pyarrow's or LightGBM's own errors, still in one line
        text = str(e).strip()
        print(f"paysys_model {args.command}: {type(e).__name__}: "
              f"{text.splitlines()[0] if text else ''}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
