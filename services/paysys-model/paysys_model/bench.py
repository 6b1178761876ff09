"""`bench`: time prepare + train on a synthetic feed of --rows payments (default 1 M over 42
days), the issue's target being <= 5 min and <= 4 GiB peak RSS on a 2-core machine.

The feed is generated and written first (not timed); then `python -m paysys_model train` runs
as a child process reading it, and its wall time and peak RSS (getrusage of the child) are
reported: exactly what a user's training run costs, generation excluded.
"""

import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

from .synth import generate, write_feed


def run(args):
    work = args.dir or tempfile.mkdtemp(prefix="paysys-model-bench-")
    try:
        feed_dir = os.path.join(work, "feed")
        out = os.path.join(work, "model")
        shutil.rmtree(feed_dir, ignore_errors=True)
        shutil.rmtree(out, ignore_errors=True)
        started = time.monotonic()
        feed, _ = generate(args.rows, args.days, args.seed)
        write_feed(feed, feed_dir)
        del feed
        generated = time.monotonic() - started
        print(f"generated {args.rows} payments over {args.days} days in {generated:.1f} s",
              file=sys.stderr)
        load_before = os.getloadavg()[0]
        started = time.monotonic()
        child = subprocess.run(
            [sys.executable, "-m", "paysys_model", "train", "--feed", feed_dir, "--out", out,
             "--seed", str(args.seed)],
            env=dict(os.environ, PYTHONPATH=os.pathsep.join(
                [os.path.dirname(os.path.dirname(os.path.abspath(__file__)))]
                + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])))
        wall = time.monotonic() - started
        if child.returncode != 0:
            print(f"bench: training failed with exit status {child.returncode}", file=sys.stderr)
            return
        # ru_maxrss of the children is in KiB on Linux: the largest child, here the only one.
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        with open(os.path.join(out, "model-card.json"), encoding="utf-8") as f:
            card = json.load(f)
        result = {
            "rows": args.rows,
            "days": args.days,
            "labeled_rows": sum(card["training"]["rows"].values()),
            "prepare_and_train_wall_seconds": round(wall, 1),
            "prepare_and_train_cpu_seconds": round(usage.ru_utime + usage.ru_stime, 1),
            "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),
            "cpus": os.cpu_count(),
            # Other processes' load: the wall time on a shared machine depends on it.
            "load_average_1min": {"before": round(load_before, 2),
                                  "after": round(os.getloadavg()[0], 2)},
            "model_version": card["model_version"],
            "validation_roc_auc": card["metrics"]["model"]["roc_auc"],
            "targets": {"wall_seconds": 300, "peak_rss_mib": 4096},
        }
        result["met"] = (result["prepare_and_train_wall_seconds"] <= 300
                         and result["peak_rss_mib"] <= 4096)
        print(json.dumps(result, indent=2))
    finally:
        if not args.dir:
            shutil.rmtree(work, ignore_errors=True)
