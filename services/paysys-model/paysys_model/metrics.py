"""Decision metrics on labeled payments, the same for a model and for the rules.

Amounts are exact: integer sums of `amount_minor`, per currency (a sum across currencies of
minor units would mean nothing).
"""

from collections import defaultdict

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score


def amounts_by_currency(mask, currency, amount_minor):
    """{currency: exact sum of amount_minor} over the rows in `mask`, currencies sorted."""
    totals = defaultdict(int)
    for cur, amount in zip(currency[mask].tolist(), amount_minor[mask].tolist()):
        totals[cur] += int(amount)
    return dict(sorted(totals.items()))


def decision_metrics(label, declined, currency, amount_minor, score=None):
    """What a set of decisions did on labeled rows (label 1 = fraud). `score` (higher = more
    likely fraud) gives the ranking metrics; without it they are computed on the decisions
    themselves (a 0/1 score, as for the rules)."""
    label = np.asarray(label, dtype=np.int64)
    declined = np.asarray(declined, dtype=bool)
    fraud = label == 1
    legit = ~fraud
    caught = fraud & declined
    false_alarm = legit & declined
    ranking = declined.astype(np.float64) if score is None else np.asarray(score, np.float64)
    both_classes = fraud.any() and legit.any()
    return {
        "rows": int(len(label)),
        "frauds": int(fraud.sum()),
        "roc_auc": float(roc_auc_score(label, ranking)) if both_classes else None,
        "pr_auc": float(average_precision_score(label, ranking)) if both_classes else None,
        "recall": ratio(caught.sum(), fraud.sum()),
        "precision": ratio(caught.sum(), declined.sum()),
        "fpr": ratio(false_alarm.sum(), legit.sum()),
        "approval_rate": ratio((~declined).sum(), len(label)),
        "declined": int(declined.sum()),
        "fraud_caught": int(caught.sum()),
        "fraud_amount_minor": amounts_by_currency(fraud, currency, amount_minor),
        "fraud_amount_caught_minor": amounts_by_currency(caught, currency, amount_minor),
        "legit_amount_declined_minor": amounts_by_currency(false_alarm, currency, amount_minor),
    }


def ratio(a, b):
    return float(a) / float(b) if b else None


def threshold_for_fpr(score, label, target_fpr):
    """The lowest threshold whose false-positive rate (share of legitimate rows with
    score >= threshold) is at most `target_fpr`: the most fraud caught within the budget.

    With the legitimate scores in descending order s1 >= s2 >= ..., at most k = floor(target *
    legit) may reach the threshold, so it must exceed s(k+1); it is put halfway between s(k+1)
    and the next higher score of any row, which keeps the same decisions on these rows while
    leaving a margin for the last bits of a float computed elsewhere (the Rust engine)."""
    score = np.asarray(score, dtype=np.float64)
    legit = np.sort(score[np.asarray(label) == 0])[::-1]
    k = int(np.floor(target_fpr * len(legit) + 1e-9))
    if k >= len(legit):
        return float(score.min()) if len(score) else 0.0
    bound = legit[k]
    above = score[score > bound]
    if len(above):
        return float((bound + above.min()) / 2.0)
    return float(np.nextafter(bound, np.inf))
