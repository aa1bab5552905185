"""The next-item task: the task as an option, RecBole's sequential models through the plugin, ranking tables."""

import csv
import json
from pathlib import Path

import pytest
import torch
import yaml
from recbole.config import Config as RecBoleConfig
from recbole.data import create_dataset as recbole_create_dataset
from recbole.data import data_preparation
from recbole.model.sequential_recommender import SASRec
from recbole.trainer import Trainer
from recbole.data.interaction import Interaction
from recbole.utils import init_seed

from recbole_cora import run_recbole_cora
from recbole_cora.config import Config
from recbole_cora.data import NextItemDataset
from recbole_cora.tasks import mask_history
from recbole_cora.utils import create_dataset

from conftest import QUIET
from helpers import SLICE_OPTIONS, ml100k_slice

SASREC = {"n_layers": 1, "n_heads": 1, "hidden_size": 16, "inner_size": 32, "epochs": 2, "train_batch_size": 256,
          "eval_batch_size": 256, "filter_inter_by_user_or_item": False}


def test_the_task_is_chosen_apart_from_the_dataset_and_one_dataset_config_serves_both():
    labeled = Config("LightGCN", "ml-100k", config_dict=QUIET)
    ranked = Config("LightGCN", "ml-100k", config_dict={**QUIET, "task": "next_item"})
    assert labeled["task"] == "labeled" and labeled["threshold"] == {"rating": 4}
    assert labeled["eval_args"]["mode"] == {"valid": "labeled", "test": "labeled"}
    assert ranked["threshold"] is None and ranked["metrics"] == ["Recall", "NDCG", "MRR", "Hit"]
    assert ranked["eval_args"] == {"split": {"LS": "valid_and_test"}, "order": "TO", "group_by": "user",
                                   "mode": {"valid": "full", "test": "full"}}
    assert ranked["topk"] == [10, 20] and ranked["valid_metric"] == "NDCG@10"
    sasrec = Config("SASRec", "ml-100k", config_dict=QUIET)  # a sequential model's own task
    assert sasrec["task"] == "next_item" and sasrec["train_neg_sample_args"]["distribution"] == "none"
    assert Config("Laser", "ml-100k", config_dict=QUIET)["task"] == "next_item"
    for name in ("dataset_configs/ml-100k.yaml", "dataset_configs/ml-1m.yaml", "dataset_configs/amazon-book.yaml"):
        options = yaml.safe_load((Path(__file__).resolve().parents[1] / name).read_text())
        assert "eval_args" not in options and "threshold" not in options and "metrics" not in options, name


def test_a_partial_eval_args_keeps_the_task_s_other_keys(tmp_path):
    # tried as a new user would: only the split; it used to end in RecBole's bare NotImplementedError
    mine = tmp_path / "mine.yaml"
    mine.write_text(yaml.safe_dump({"eval_args": {"split": {"TB": ["2002-04-01", "2002-09-01"]}}}))
    config = Config("FM", "ml-1m", config_file_list=[str(mine)], config_dict={**QUIET, "data_path": "nowhere"})
    assert config["eval_args"] == {"split": {"TB": ["2002-04-01", "2002-09-01"]}, "order": "TO", "group_by": None,
                                   "mode": {"valid": "labeled", "test": "labeled"}}
    config = Config("SASRec", "ml-100k", config_dict={**QUIET, "eval_args": {"split": {"LS": "test_only"}}})
    assert config["eval_args"]["mode"] == {"valid": "full", "test": "full"} and config["eval_args"]["order"] == "TO"


@pytest.mark.parametrize("model, task, runs", [("CoRA", "next_item", "labeled"), ("Laser", "labeled", "next_item"),
                                               ("DIN", "next_item", "labeled"), ("DeepFM", "next_item", "labeled")])
def test_a_model_on_a_task_it_does_not_run_is_refused_before_anything_loads(model, task, runs):
    # the data_path does not exist and no LLM is given: the refusal comes first
    with pytest.raises(ValueError, match=f"{model} does not run the {task} task \\(it runs: {runs}"):
        Config(model, "nowhere", config_dict={**QUIET, "task": task})
    with pytest.raises(ValueError, match="task 'ranking' is unknown"):
        Config("LightGCN", "ml-100k", config_dict={**QUIET, "task": "ranking"})


def test_mf_names_bpr_everywhere():
    config = Config("MF", "ml-100k", config_dict=QUIET)
    assert config["model"] == "BPR" and config.model_class.__name__ == "BPR"


def test_sasrec_through_the_plugin_gives_recbole_s_own_metrics(tmp_path):
    path = ml100k_slice(tmp_path)
    options = {**QUIET, **SLICE_OPTIONS, **SASREC, "data_path": path, "mask_history": False}
    ours = run_recbole_cora("SASRec", "ml100k-slice", config_dict=options, saved=False)

    protocol = {"eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "group_by": "user", "mode": "full"},
                "metrics": ["Recall", "NDCG", "MRR", "Hit"], "topk": [10, 20], "valid_metric": "NDCG@10",
                "train_neg_sample_args": None}
    config = RecBoleConfig("SASRec", "ml100k-slice", config_dict={**options, **protocol})
    init_seed(config["seed"], config["reproducibility"])
    dataset = recbole_create_dataset(config)
    train, valid, test = data_preparation(config, dataset)
    init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
    trainer = Trainer(config, SASRec(config, train._dataset).to(config["device"]))
    trainer.fit(train, valid, saved=False)
    theirs = trainer.evaluate(test, load_best_model=False)
    assert ours["test_result"]["users"] == 120
    for key, value in theirs.items():
        assert ours["test_result"][key] == value, key

    folder = Path(ours["results_dir"])  # the task's columns, as Markdown, CSV and JSON
    with open(folder / "results.csv") as f:
        header = next(csv.reader(f))
    assert header == ["model", "group", "n", "recall@10", "recall@20", "ndcg@10", "ndcg@20", "mrr@10", "mrr@20",
                      "hit@10", "hit@20"]
    assert "NDCG@10" in (folder / "results.md").read_text() and "AUC" not in (folder / "results.md").read_text()
    assert json.loads((folder / "results.json").read_text())["SASRec"]["ndcg@10"] == theirs["ndcg@10"]


def test_every_model_ranks_without_the_user_s_earlier_items_and_the_data_has_text(tmp_path):
    scores = torch.zeros(2, 6)
    batch = Interaction({"item_id_list": torch.tensor([[1, 3, 0], [5, 0, 0]])})
    config = {"ITEM_ID_FIELD": "item_id", "LIST_SUFFIX": "_list"}
    masked = mask_history(scores, batch, config)
    assert torch.isinf(masked[0, [1, 3]]).all() and torch.isinf(masked[1, 5])
    assert torch.isinf(masked).sum() == 3  # the padding id 0 is left to the caller
    path = ml100k_slice(tmp_path)
    options = {**QUIET, **SLICE_OPTIONS, **SASREC, "data_path": path, "epochs": 1}
    masked_run = run_recbole_cora("SASRec", "ml100k-slice", config_dict=options, saved=False)["test_result"]
    plain_run = run_recbole_cora("SASRec", "ml100k-slice", config_dict={**options, "mask_history": False},
                                 saved=False)["test_result"]
    assert masked_run["hit@20"] >= plain_run["hit@20"]  # ml-100k has no repeats: masking only removes wrong answers
    config = Config("SASRec", "ml100k-slice", config_dict=options)
    dataset = create_dataset(config)
    assert isinstance(dataset, NextItemDataset)
    train, _, _ = data_preparation(config, dataset)
    assert train._dataset.fingerprint == dataset.fingerprint
    assert dataset.item_title(dataset.token2id("item_id", "1")) == "Toy Story (1995)"  # from the .item file
