"""Evaluation keeps the ranking of raw scores: probabilities are float64, so a saturated sigmoid makes no ties."""

import torch
from recbole.data import data_preparation
from recbole.utils import init_seed

from recbole_cora.config import Config
from recbole_cora.model.llm_recommender.zeroshot import ZeroShot
from recbole_cora.trainer import LLMTrainer
from recbole_cora.utils import create_dataset

from conftest import SMALL_CORA


def test_auc_of_a_large_answer_logit_is_the_auc_of_the_logit(tiny_llm):
    """SmolLM2's zero-shot Yes logit is about +15 on the embedded default: in float32 its sigmoid took a handful
    of values over 500 rows, so the AUC was computed on ties. Shifting every logit by +15 must change nothing."""
    config = Config("ZeroShot", "ml-100k", config_dict={**SMALL_CORA, "llm_path": tiny_llm, "eval_rows": 120})
    init_seed(config["seed"], config["reproducibility"])
    train, valid, test = data_preparation(config, create_dataset(config))
    model = ZeroShot(config, train._dataset).eval()
    trainer = LLMTrainer(config, model)
    plain = trainer.evaluate_model(model, test)
    scorer = model.scorer
    model.scorer = lambda *args, **kwargs: scorer(*args, **kwargs).double() + 15.0  # the shift itself exact
    shifted = trainer.evaluate_model(model, test)
    assert 0.3 < plain["auc"] < 0.7 and plain["auc"] != 0.5
    for key in ("auc", "uauc", "warm_auc", "cold_auc"):
        assert shifted[key] == plain[key] or (shifted[key] != shifted[key] and plain[key] != plain[key]), key
    assert shifted["logloss"] > 3 * plain["logloss"]  # the probabilities are near 1, as they should be
    with torch.no_grad():
        assert model.predict(train.collate_fn(list(range(4)))).dtype == torch.float64
