"""Plugin metrics, registered into RecBole's metric registry on import of ``recbole_cora``."""

from recbole.evaluator import register
from recbole.utils import EvaluatorType

from recbole_cora.evaluator.collector import LabeledCollector
from recbole_cora.evaluator.grouped import GROUPS, RowSubsetEvaluator, evaluate_groups, subset_struct
from recbole_cora.evaluator.metrics import UAUC, binary_auc, user_auc

PLUGIN_METRICS = {"uauc": UAUC}


def register_metrics():
    """Add the plugin's metrics to RecBole's registry dicts (the ones Config and Evaluator read)."""
    for name, metric in PLUGIN_METRICS.items():
        register.metrics_dict[name] = metric
        register.metric_information[name] = metric.metric_need
        register.metric_types[name] = metric.metric_type
        if metric.smaller and name not in register.smaller_metrics:
            register.smaller_metrics.append(name)
    assert register.metric_types["uauc"] == EvaluatorType.VALUE


__all__ = [
    "GROUPS", "LabeledCollector", "PLUGIN_METRICS", "RowSubsetEvaluator", "UAUC", "binary_auc", "evaluate_groups",
    "register_metrics", "subset_struct", "user_auc",
]
