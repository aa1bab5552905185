"""The zero-shot row: the frozen LLM alone on the plain prompt, as a model of its own and beside every labeled LLM
model's row, computed once per set of prompts."""

import json
from pathlib import Path

import torch
from recbole.data import data_preparation
from recbole.utils import init_seed

from recbole_cora import run_recbole_cora
from recbole_cora.config import Config
from recbole_cora.model.llm_recommender.collm import CoLLM
from recbole_cora.model.llm_recommender.tallrec import TALLRec
from recbole_cora.stages import run_cf_stage
from recbole_cora.utils import create_dataset

from conftest import SMALL_CORA
from helpers import answer_scores

ROW = "ZeroShot (frozen LLM)"
METRICS = ("auc", "uauc", "logloss", "warm_auc", "cold_auc", "rows")


def frozen_yes_logits(model, batch):
    ids, mask = model.prompts.batch(batch)
    return answer_scores(model, ids, mask)


def test_zero_shot_runs_as_a_model_that_trains_nothing_and_scores_with_the_frozen_llm(tiny_llm):
    options = {**SMALL_CORA, "llm_path": tiny_llm, "eval_rows": 80}
    out = run_recbole_cora("ICL", "ml-100k", config_dict=options)  # the papers' name for it
    assert set(out["results"]) == {"ZeroShot"}  # no second zero-shot row, no encoder row
    assert out["test_result"]["trainable_parameters"] == 0 and out["test_result"]["rows"] == 80
    assert out["best_valid_result"]["rows"] == 80
    config = Config("ZeroShot", "ml-100k", config_dict=options)
    init_seed(config["seed"], config["reproducibility"])
    train, _, _ = data_preparation(config, create_dataset(config))
    from recbole_cora.model.llm_recommender.zeroshot import ZeroShot

    model = ZeroShot(config, train._dataset).eval()
    batch = train.collate_fn(list(range(8)))
    with torch.no_grad():
        assert torch.equal(model(batch), frozen_yes_logits(model, batch))


def test_every_labeled_llm_table_has_the_zero_shot_row_equal_to_the_zero_shot_model_and_computed_once(tiny_llm):
    options = {**SMALL_CORA, "llm_path": tiny_llm, "train_rows_per_epoch": 32, "eval_rows": 80}
    alone = run_recbole_cora("ZeroShot", "ml-100k", config_dict=options)["test_result"]
    cora = run_recbole_cora("CoRA", "ml-100k", config_dict=options)
    assert list(cora["results"]) == ["LightGCN (frozen CF encoder)", ROW, "CoRA"]
    for key in METRICS:  # the same rows, the same prompts, the same LLM: the same numbers
        assert cora["results"][ROW][key] == alone[key] or (alone[key] != alone[key] and cora["results"][ROW][key] != cora["results"][ROW][key]), key
    assert isinstance(cora["results"][ROW]["rows"], int)  # the table prints "80", not "80.0000"
    cached = list(Path("saved/cf/zero-shot").glob("ml-100k-*.json"))
    assert len(cached) == 1
    marked = {**json.loads(cached[0].read_text()), "auc": 0.125}  # a value no evaluation gives: read, not recomputed
    cached[0].write_text(json.dumps(marked))
    tallrec = run_recbole_cora("TALLRec", "ml-100k", config_dict=options)  # the same plain prompts: reused
    assert tallrec["results"][ROW] == marked
    shorter = run_recbole_cora("TALLRec", "ml-100k", config_dict={**options, "history_len": 3})  # other prompts
    assert len(list(Path("saved/cf/zero-shot").glob("ml-100k-*.json"))) == 2
    assert shorter["results"][ROW]["auc"] != 0.125
    off = run_recbole_cora("TALLRec", "ml-100k", config_dict={**options, "zero_shot_row": False})
    assert ROW not in off["results"]


def test_zero_shot_bypasses_trained_lora_and_leaves_what_trains_as_it_was(tiny_llm):
    config = Config("CoLLM", "ml-100k", config_dict={**SMALL_CORA, "llm_path": tiny_llm})
    init_seed(config["seed"], config["reproducibility"])
    dataset = create_dataset(config)
    train, _, _ = data_preparation(config, dataset)
    config["cf_stage_dir"] = str(run_cf_stage(config, dataset))
    from recbole_cora.model.llm_recommender.zeroshot import ZeroShot

    batch = train.collate_fn(list(range(8)))
    with torch.no_grad():
        plain = ZeroShot(config, train._dataset).eval()(batch)  # an LLM of its own, no LoRA ever injected
    torch.manual_seed(0)
    for model in (TALLRec(config, train._dataset), CoLLM(config, train._dataset)):
        with torch.no_grad():  # a LoRA that has learned something
            for name, p in model.llm.named_parameters():
                if "lora_B" in name:
                    p.normal_(0, 0.5)
        model.eval()
        if isinstance(model, CoLLM):
            model.set_stage(2)  # the mapping trains, the LoRA is frozen
        flags = {n: p.requires_grad for n, p in model.named_parameters()}
        with torch.no_grad():
            trained = model(batch)
            with model.zero_shot():  # the plain prompt, no LoRA: the frozen LLM's own logit
                zero = model(batch)
        assert torch.allclose(zero, plain, atol=1e-5)
        assert not torch.allclose(trained, zero)
        assert torch.equal(model(batch), trained)  # the LoRA is back after the block
        assert {n: p.requires_grad for n, p in model.named_parameters()} == flags
