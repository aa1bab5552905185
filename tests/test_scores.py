"""Evaluation keeps the ranking of raw scores: probabilities are float64, so a saturated sigmoid makes no ties."""

import torch
from recbole.data import data_preparation
from recbole.utils import init_seed

from recbole_cora.config import Config
from recbole_cora.model.llm_recommender.zeroshot import ZeroShot
from recbole_cora.training import LLMTrainer
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


def test_the_default_score_ignores_the_offset_all_answer_logits_share(tiny_llm, monkeypatch):
    """The default (yes_minus_no) is log P(Yes)/P(No): an LLM whose every logit sits +15 higher scores the same.
    With the raw Yes logit (CoRA's code) BCE started at 9.5 on the embedded default."""
    import recbole_cora.llm.scoring as scoring

    config = Config("CoRA", "ml-100k", config_dict={**SMALL_CORA, "llm_path": tiny_llm})
    assert config["answer_score"] == "yes_minus_no"
    logits = torch.tensor([[2.0, 1.0], [0.5, 1.5]])
    scorer = scoring.AnswerScorer.__new__(scoring.AnswerScorer)
    scorer.answer_ids, scorer.mode = [0, 1], config["answer_score"]
    for offset in (0.0, 15.0):
        monkeypatch.setattr(scoring, "last_position_answer_logits", lambda *a, **k: logits + offset)
        assert torch.equal(scorer(None, None, None), torch.tensor([1.0, -1.0]))


def test_the_query_generator_gives_each_pair_its_own_delta_from_the_start(tiny_llm):
    """LightGCN's embeddings share a large common part; read raw, the query generator's A_b of two pairs had a cosine
    of 0.9998 (embedded default: 0.983 at the start, 1.0000 after training). Standardised (the default), they differ."""
    from recbole_cora.model.llm_recommender.cora import CoRA
    from recbole_cora.stages import run_cf_stage

    def pair_cosine(A):
        flat = torch.nn.functional.normalize(A.flatten(1), dim=-1)
        cosine = flat @ flat.t()
        return float((cosine.sum() - cosine.trace()) / (len(flat) * (len(flat) - 1)))

    cosines = {}
    for norm in ("standardize", "none"):
        config = Config("CoRA", "ml-100k", config_dict={**SMALL_CORA, "llm_path": tiny_llm, "cf_input_norm": norm})
        init_seed(config["seed"], config["reproducibility"])
        dataset = create_dataset(config)
        train, _, _ = data_preparation(config, dataset)
        config["cf_stage_dir"] = str(run_cf_stage(config, dataset))
        torch.manual_seed(0)
        model = CoRA(config, train._dataset).eval()
        batch = train.collate_fn(torch.randperm(len(train._dataset))[:64].tolist())
        with torch.no_grad():
            cosines[norm] = pair_cosine(model.lora_factors(batch))
    assert cosines["standardize"] < 0.9 < cosines["none"], cosines
