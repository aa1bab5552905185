"""All / warm / cold results from one collected evaluation."""

from collections import OrderedDict
from logging import getLogger

import torch
from recbole.evaluator.collector import DataStruct

GROUPS = ("all", "warm", "cold")


ROW_KEYS = ("rec.score", "data.label", "data.uid", "data.warm", "rec.topk")


def subset_struct(struct, index):
    """A DataStruct holding only the rows selected by ``index`` (a mask or row indices)."""
    part = DataStruct()
    for key in ROW_KEYS:
        if key in struct:
            part.set(key, struct.get(key)[index])
    return part


def evaluate_groups(evaluator, struct):
    """RecBole's ``Evaluator`` on all rows, then on warm and cold rows alone.

    Keys: ``auc`` for all rows (so RecBole's ``valid_metric`` works unchanged), ``warm_auc``,
    ``cold_auc``... A group with no rows, or with one class only where a metric needs both, is NaN. With UAUC,
    ``uauc_users`` (``warm_uauc_users``, ...) counts the users its mean is over (those with both classes).
    """
    uauc = evaluator.metric_class.get("uauc")
    counts = []
    result = OrderedDict(evaluator.evaluate(struct))
    result["rows"] = int(struct.get("data.label").numel())
    if uauc is not None:
        counts.append(("all", *uauc.last_counts))
        result["uauc_users"] = int(uauc.last_counts[0])
    if "data.warm" not in struct:
        _log_uauc_counts(counts)
        return result
    warm = struct.get("data.warm").view(-1) > 0.5
    for group, mask in (("warm", warm), ("cold", ~warm)):
        labels = struct.get("data.label").view(-1)[mask]
        if len(labels) == 0 or bool(torch.all(labels == labels[0])):
            values = {name: float("nan") for name in evaluator.metrics}
        else:
            values = evaluator.evaluate(subset_struct(struct, mask))
            if uauc is not None:
                counts.append((group, *uauc.last_counts))
        for name, value in values.items():
            result[f"{group}_{name}"] = value
        if uauc is not None:
            result[f"{group}_uauc_users"] = int(counts[-1][1]) if counts[-1][0] == group else 0
    result["warm_rows"] = int(warm.sum())
    result["cold_rows"] = int((~warm).sum())
    _log_uauc_counts(counts)
    return result


def _log_uauc_counts(counts):
    if counts:
        getLogger().info(
            "UAUC users evaluated (skipped: one class only): "
            + ", ".join(f"{group} {n} ({skipped})" for group, n, skipped in counts)
        )


class RowSubsetEvaluator:
    """RecBole's Evaluator on some rows of the collected data only (the users of ``eval_rows``)."""

    def __init__(self, evaluator, rows):
        self.evaluator, self.rows = evaluator, torch.as_tensor(rows)

    def evaluate(self, struct):
        return self.evaluator.evaluate(subset_struct(struct, self.rows))
