"""`evaluate`: champion vs shadow challenger on labeled data, and the model-vs-rules report.

Labels: by default the training label rule (approved, mature payments; fraud iff disputed as
fraudulent or unrecognized). Declined payments never get such labels, so on disputes the
champion's recall is 0 by construction: what the numbers show is what the challenger would
change on the payments the champion let through. With --truth (the simulator's ground truth
for a simulated hold-out) every decided payment is labeled and both are measured in full.

The champion's decision per payment: `model_score >= model_threshold` where a model decided,
else `rules_outcome` (rules mode), else `decision_outcome`. The challenger's:
`shadow_score >= ` the threshold of its card (--challenger-card; the feed holds no shadow
threshold).
"""

import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from . import card as cards
from .contract import CARD_FILE, ModelError
from .feed import feature_matrix, is_fraud, iso, label_rule, parse_as_of, read_feed
from .metrics import decision_metrics, threshold_for_fpr

MIN_COMPARE_FPR = 0.01
SHOWN = ("rows", "frauds", "recall", "precision", "fpr", "approval_rate", "declined",
         "fraud_caught", "fraud_amount_caught_minor", "legit_amount_declined_minor")


def labeled(feed, truth_path, maturity_days, as_of):
    """(rows, labels as int array, description, groups or None) of the payments that have a
    label; groups = the truth file's `pattern` of each row, when it has that column."""
    decided = pc.fill_null(pc.is_valid(feed["decision_outcome"]), False)
    if truth_path:
        try:
            names = pq.read_schema(truth_path).names
            truth = pq.read_table(truth_path, columns=["payment_id", "is_fraud"]
                                  + (["pattern"] if "pattern" in names else []))
        except (pa.ArrowException, OSError, KeyError) as e:
            raise ModelError(f"cannot read the truth file {truth_path} (payment_id, is_fraud, "
                             f"pattern): {str(e).splitlines()[0]}")
        fraud_by_id = dict(zip(truth["payment_id"].to_pylist(),
                               truth["is_fraud"].cast(pa.bool_()).to_pylist()))
        ids = feed["payment_id"].to_pylist()
        known = np.array([i in fraud_by_id for i in ids]) & decided.to_numpy(zero_copy_only=False)
        rows = feed.filter(pa.array(known))
        ids = rows["payment_id"].to_pylist()
        label = np.array([fraud_by_id[i] for i in ids], np.int64)
        groups = None
        if "pattern" in truth.column_names:
            group_by_id = dict(zip(truth["payment_id"].to_pylist(),
                                   truth["pattern"].to_pylist()))
            groups = np.array([str(group_by_id[i]) for i in ids], dtype=object)
        return rows, label, (f"ground truth from {truth_path} on every decided payment "
                             f"({int((~known).sum())} payment(s) of the feed without truth or "
                             f"decision left out)"), groups
    approved, mature, _, horizon = label_rule(
        feed, parse_as_of(as_of) if as_of else None, maturity_days)
    rows = feed.filter(pa.array(approved & mature))
    return rows, is_fraud(rows["dispute_reason"]).astype(np.int64), (
        f"disputes on approved payments created at or before {iso(horizon)}: the champion "
        f"approved every one of them, so its recall is 0 by construction; the challenger's "
        f"numbers are what it would have changed"), None


def champion_declines(rows):
    score = rows["model_score"].to_numpy(zero_copy_only=False)
    threshold = rows["model_threshold"].to_numpy(zero_copy_only=False)
    rules = np.array(rows["rules_outcome"].to_pylist(), dtype=object)
    outcome = np.array(rows["decision_outcome"].to_pylist(), dtype=object)
    by_model = ~np.isnan(score.astype(np.float64)) & ~np.isnan(threshold.astype(np.float64))
    by_rules = ~by_model & (rules != None)  # noqa: E711 (elementwise)
    declined = np.where(by_model, np.nan_to_num(score) >= np.nan_to_num(threshold),
                        np.where(by_rules, rules == "declined", outcome == "declined"))
    deciders = sorted(set(rows["model_version"].filter(pa.array(by_model)).to_pylist())
                      | ({"rules"} if by_rules.any() else set())
                      | ({"decision_outcome"} if (~by_model & ~by_rules).any() else set()))
    return declined.astype(bool), deciders


def read_card(path):
    if os.path.isdir(path):
        path = os.path.join(path, CARD_FILE)
    try:
        with open(path, "rb") as f:
            card = json.loads(f.read())
        return card["model_version"], float(card["threshold"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ModelError(f"cannot read the challenger card {path}: {e}")


def by_group(groups, **declined):
    """Per value of the truth's `pattern` column (whatever the simulator named them): payments,
    and how many of them each decision-maker declined."""
    if groups is None:
        return None
    result = {}
    for group in sorted(set(groups.tolist())):
        mask = groups == group
        result[group] = {"payments": int(mask.sum())}
        result[group].update({f"{who}_declined": int((d & mask).sum())
                              for who, d in declined.items()})
    return result


def champion_challenger(rows, label, card_path, groups=None):
    currency = rows["currency"].to_numpy(zero_copy_only=False)
    amount = rows["amount_minor"].to_numpy(zero_copy_only=False)
    declined, deciders = champion_declines(rows)
    result = {"champion": {"deciders": deciders}}
    if not card_path:
        result["champion"].update(decision_metrics(label, declined, currency, amount))
        result["by_pattern"] = by_group(groups, champion=declined)
        result["challenger"] = None
        result["note"] = "no --challenger-card: champion only"
        return result
    version, threshold = read_card(card_path)
    shadow = rows["shadow_score"].to_numpy(zero_copy_only=False).astype(np.float64)
    mine = pc.fill_null(pc.equal(rows["shadow_model_version"], version),
                        False).to_numpy(zero_copy_only=False) & ~np.isnan(shadow)
    if not mine.any():
        raise ModelError(f"no labeled payment has a shadow score of {version}")
    # Both on the very same payments: those the challenger scored.
    result["champion"].update(decision_metrics(label[mine], declined[mine], currency[mine],
                                               amount[mine]))
    challenger_declined = shadow[mine] >= threshold
    result["challenger"] = {"model_version": version, "threshold": threshold}
    result["challenger"].update(decision_metrics(label[mine], challenger_declined,
                                                 currency[mine], amount[mine], shadow[mine]))
    result["approval_rate_change"] = (result["challenger"]["approval_rate"]
                                      - result["champion"]["approval_rate"])
    result["left_out"] = int((~mine).sum())
    result["by_pattern"] = by_group(None if groups is None else groups[mine],
                                    champion=declined[mine], challenger=challenger_declined)
    return result


def compare_rules(rows, label, model_dir, groups=None):
    """The model (scored offline from model_dir) against the default rules on the same
    payments, at the rules' own FPR there or MIN_COMPARE_FPR, whichever is higher."""
    booster, card = cards.load_model_dir(model_dir)
    usable = (pc.fill_null(pc.equal(rows["features_version"], card["features_version"]), False)
              .to_numpy(zero_copy_only=False)
              & pc.is_valid(rows["rules_outcome"]).to_numpy(zero_copy_only=False))
    if not usable.any():
        raise ModelError(f"no labeled payment has features of {card['features_version']} "
                         f"and a rules_outcome")
    rows, label = rows.filter(pa.array(usable)), label[usable]
    groups = None if groups is None else groups[usable]
    if label.min() == label.max():
        raise ModelError("the labeled payments are of one class only: nothing to compare")
    currency = rows["currency"].to_numpy(zero_copy_only=False)
    amount = rows["amount_minor"].to_numpy(zero_copy_only=False)
    score = cards.score(booster, card, feature_matrix(rows["features"]))
    rules_declined = np.array(rows["rules_outcome"].to_pylist()) == "declined"
    rules = decision_metrics(label, rules_declined, currency, amount)
    fpr = max(rules["fpr"], MIN_COMPARE_FPR)
    threshold = threshold_for_fpr(score, label, fpr)
    model = decision_metrics(label, score >= threshold, currency, amount, score)
    model.update(model_version=card["model_version"], threshold=threshold)
    at_card = decision_metrics(label, score >= card["threshold"], currency, amount, score)
    at_card["threshold"] = card["threshold"]
    ratios = {"fraud_caught": ratio(model["fraud_caught"], rules["fraud_caught"])}
    ratios["fraud_amount_caught"] = {
        cur: ratio(model["fraud_amount_caught_minor"].get(cur, 0),
                   rules["fraud_amount_caught_minor"].get(cur, 0))
        for cur in model["fraud_amount_minor"]}
    met = (ratios["fraud_caught"] is not None and ratios["fraud_caught"] >= 2
           and all(r is None or r >= 2 for r in ratios["fraud_amount_caught"].values())
           and any(r is not None for r in ratios["fraud_amount_caught"].values()))
    return {"payments": len(label), "compared_at_fpr": fpr, "rules": rules, "model": model,
            "model_at_card_threshold": at_card, "model_over_rules": ratios,
            "target_2x_met": bool(met),
            "by_pattern": by_group(groups, rules=rules_declined, model=score >= threshold)}


def ratio(a, b):
    if b == 0:
        return None if a == 0 else float("inf")
    return a / b


def run(args):
    feed = read_feed(args.feed)
    rows, label, how, groups = labeled(feed, args.truth, args.maturity_days, args.as_of)
    if len(label) == 0:
        raise ModelError(f"no labeled payments ({how})")
    report = {"labels": "truth" if args.truth else "disputes", "how": how,
              "payments": len(label), "frauds": int(label.sum())}
    report.update(champion_challenger(rows, label, args.challenger_card, groups))
    if args.compare_rules:
        report["compare_rules"] = compare_rules(rows, label, args.compare_rules, groups)
    print(render(report))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(json_safe(report), f, indent=2)
            f.write("\n")
    return report


def json_safe(value):
    """inf (a ratio over nothing caught by the rules) as the string 'inf'."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [json_safe(v) for v in value]
    if isinstance(value, float) and not np.isfinite(value):
        return "inf"
    return value


def cell(value):
    if value is None:
        return "-"
    if isinstance(value, float):
        return "inf" if not np.isfinite(value) else f"{value:.4f}"
    if isinstance(value, dict):
        return " ".join(f"{k} {v}" for k, v in value.items()) or "0"
    if isinstance(value, list):
        return ", ".join(value)
    return str(value)


def table(columns, rows):
    """Plain text, one line per metric: columns = header names, rows = lists of cells."""
    widths = [max(len(cell(r[i])) for r in rows + [columns]) for i in range(len(columns))]
    lines = ["  ".join(cell(c).ljust(w) for c, w in zip(columns, widths))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(cell(c).ljust(w) for c, w in zip(r, widths)) for r in rows]
    return "\n".join(lines)


def render(report):
    out = [f"labels: {report['how']}", f"labeled payments: {report['payments']} "
           f"({report['frauds']} fraud)", ""]
    champion, challenger = report["champion"], report.get("challenger")
    if challenger:
        out.append(table(
            ["metric", f"champion ({cell(champion['deciders'])})",
             f"challenger ({challenger['model_version']})"],
            [[m, champion[m], challenger[m]] for m in SHOWN]
            + [["approval_rate_change", None, report["approval_rate_change"]]]))
    else:
        out.append(table(["metric", f"champion ({cell(champion['deciders'])})"],
                         [[m, champion[m]] for m in SHOWN]))
        out.append(report["note"])
    out += pattern_table(report.get("by_pattern"))
    compare = report.get("compare_rules")
    if compare:
        out += ["", f"model vs default rules on {compare['payments']} payments, at FPR "
                    f"{compare['compared_at_fpr']:.4f} (the rules' own, or 1 % if higher)"]
        shown = ("fpr", "recall", "fraud_caught", "fraud_amount_caught_minor", "declined",
                 "legit_amount_declined_minor")
        out.append(table(["metric", "rules", f"model ({compare['model']['model_version']})",
                          "model at its card's threshold"],
                         [[m, compare["rules"][m], compare["model"][m],
                           compare["model_at_card_threshold"][m]] for m in shown]))
        r = compare["model_over_rules"]
        out.append(f"model / rules: fraud caught {cell(r['fraud_caught'])}, fraud amount "
                   f"caught {cell({k: cell(v) for k, v in r['fraud_amount_caught'].items()})}; "
                   f"target (>= 2x both): {'met' if compare['target_2x_met'] else 'NOT met'}")
        out += pattern_table(compare.get("by_pattern"))
    return "\n".join(out)


def pattern_table(groups):
    if not groups:
        return []
    who = [k for k in next(iter(groups.values())) if k != "payments"]
    return ["", "declined per pattern (the truth file's names):",
            table(["pattern", "payments"] + who,
                  [[g, v["payments"]] + [v[k] for k in who] for g, v in groups.items()])]
