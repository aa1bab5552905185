"""UAUC as CoLLM and CoRA report it, as a RecBole value metric.

UAUC = plain (unweighted) mean of per-user AUC over the users that have both a positive and a
negative row in the evaluated set. RecBole's GAUC is a different metric (a ranking metric, weighted by
each user's positives) and keeps its own name.
"""

from logging import getLogger

import numpy as np
from scipy.stats import rankdata
from recbole.evaluator.base_metric import AbstractMetric
from recbole.utils import EvaluatorType


def binary_auc(scores, labels):
    """AUC with ties counted as one half (the Mann-Whitney statistic)."""
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels).astype(bool)
    n_pos = int(labels.sum())
    n_neg = len(labels) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(scores)  # ties get their average rank
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def user_auc(users, scores, labels):
    """Unweighted mean of per-user AUC; returns (uauc, users evaluated, users skipped)."""
    users = np.asarray(users)
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels).astype(np.int64)
    order = np.argsort(users, kind="stable")
    users, scores, labels = users[order], scores[order], labels[order]
    bounds = np.r_[0, np.flatnonzero(np.diff(users)) + 1, len(users)]
    aucs, skipped = [], 0
    for start, end in zip(bounds[:-1], bounds[1:]):
        positives = labels[start:end].sum()
        if positives == 0 or positives == end - start:
            skipped += 1
            continue
        aucs.append(binary_auc(scores[start:end], labels[start:end]))
    value = float(np.mean(aucs)) if aucs else float("nan")
    return value, len(aucs), skipped


class UAUC(AbstractMetric):
    metric_type = EvaluatorType.VALUE
    metric_need = ["rec.score", "data.label", "data.uid"]
    smaller = False

    def calculate_metric(self, dataobject):
        users = dataobject.get("data.uid").squeeze(-1).numpy()
        scores = dataobject.get("rec.score").squeeze(-1).numpy()
        labels = dataobject.get("data.label").squeeze(-1).numpy()
        value, evaluated, skipped = user_auc(users, scores, labels)
        self.last_counts = (evaluated, skipped)
        getLogger().debug(f"UAUC over {evaluated} users; {skipped} users skipped (one class only)")
        return {"uauc": round(value, self.decimal_place)}
