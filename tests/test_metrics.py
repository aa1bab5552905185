import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from recbole.evaluator import Evaluator
from recbole.evaluator.collector import DataStruct
from recbole.evaluator.register import metric_types, metrics_dict
from recbole.utils import EvaluatorType
from sklearn.metrics import roc_auc_score

import recbole_cora  # noqa: F401  (registers UAUC)
from recbole_cora.config import Config
from recbole_cora.evaluator import binary_auc, evaluate_groups, user_auc
from recbole_cora.evaluator.metrics import UAUC

from conftest import QUIET


def reference_uauc(users, scores, labels):
    """Straightforward CoLLM-style UAUC: mean of per-user AUC over users with both classes."""
    aucs = []
    for user in sorted(set(users)):
        rows = [i for i, u in enumerate(users) if u == user]
        y = [labels[i] for i in rows]
        if len(set(y)) < 2:
            continue
        aucs.append(roc_auc_score(y, [scores[i] for i in rows]))
    return (float(np.mean(aucs)) if aucs else float("nan")), len(aucs)


rows = st.lists(
    st.tuples(st.integers(0, 6), st.sampled_from([0.0, 0.25, 0.5, 0.75, 1.0]), st.integers(0, 1)),
    min_size=1, max_size=60,
)


@settings(max_examples=200, deadline=None)
@given(rows)
def test_uauc_matches_reference_with_ties_and_degenerate_users(data):
    users, scores, labels = map(list, zip(*data))
    value, evaluated, skipped = user_auc(users, scores, labels)
    expected, n_expected = reference_uauc(users, scores, labels)
    assert evaluated == n_expected
    assert evaluated + skipped == len(set(users))
    if math.isnan(expected):
        assert math.isnan(value)
    else:
        assert value == pytest.approx(expected, abs=1e-12)


@settings(max_examples=100, deadline=None)
@given(rows)
def test_uauc_is_invariant_to_row_order(data):
    users, scores, labels = map(np.asarray, zip(*data))
    perm = np.random.default_rng(len(data)).permutation(len(data))
    a = user_auc(users, scores, labels)
    b = user_auc(users[perm], scores[perm], labels[perm])
    assert a[1:] == b[1:]
    assert (math.isnan(a[0]) and math.isnan(b[0])) or a[0] == pytest.approx(b[0], abs=1e-12)


def test_binary_auc_matches_sklearn():
    rng = np.random.default_rng(0)
    for _ in range(20):
        labels = rng.integers(0, 2, 200)
        scores = rng.integers(0, 10, 200) / 10.0  # many ties
        assert binary_auc(scores, labels) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)


def test_uauc_is_registered_as_a_recbole_value_metric_and_gauc_keeps_its_meaning():
    assert metrics_dict["uauc"] is UAUC
    assert metric_types["uauc"] == EvaluatorType.VALUE
    assert metric_types["gauc"] == EvaluatorType.RANKING  # RecBole's GAUC is a different, ranking metric
    config = Config("FM", "ml-100k", config_dict={**QUIET, "metrics": ["AUC", "UAUC", "LogLoss"]})
    assert config["eval_type"] == EvaluatorType.VALUE
    with pytest.raises(RuntimeError, match="can not be used at the same time"):
        Config("FM", "ml-100k", config_dict={**QUIET, "metrics": ["UAUC", "GAUC"]})


def _struct(users, scores, labels, warm):
    struct = DataStruct()
    struct.set("data.uid", torch.tensor(users))
    struct.set("rec.score", torch.tensor(scores, dtype=torch.float))
    struct.set("data.label", torch.tensor(labels, dtype=torch.float))
    struct.set("data.warm", torch.tensor(warm, dtype=torch.float))
    return struct


def test_grouped_evaluation_equals_evaluating_each_group_alone():
    rng = np.random.default_rng(1)
    n = 300
    users = rng.integers(0, 30, n).tolist()
    scores = rng.random(n).tolist()
    labels = rng.integers(0, 2, n).tolist()
    warm = (rng.random(n) < 0.6).astype(int).tolist()
    config = Config("FM", "ml-100k", config_dict=QUIET)
    evaluator = Evaluator(config)
    result = evaluate_groups(evaluator, _struct(users, scores, labels, warm))
    assert result["rows"] == n and result["warm_rows"] + result["cold_rows"] == n
    for group, flag in (("warm", 1), ("cold", 0)):
        idx = [i for i in range(n) if warm[i] == flag]
        alone = evaluator.evaluate(_struct(*([x[i] for i in idx] for x in (users, scores, labels, warm))))
        for metric in ("auc", "uauc", "logloss"):
            assert result[f"{group}_{metric}"] == alone[metric]
    assert result["auc"] == round(roc_auc_score(labels, scores), 4)


def test_a_group_with_one_class_reports_nan_not_an_error():
    config = Config("FM", "ml-100k", config_dict=QUIET)
    result = evaluate_groups(Evaluator(config), _struct([1, 1, 2, 2], [0.1, 0.9, 0.3, 0.4], [0, 1, 1, 1], [1, 1, 0, 0]))
    assert math.isnan(result["cold_auc"]) and result["cold_rows"] == 2
    assert result["warm_auc"] == 1.0
