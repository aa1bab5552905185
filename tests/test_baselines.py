import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from recbole_cora import run_recbole_cora

from conftest import QUIET, ROOT


# DIN embeds every history item's features: on the whole of ml-100k one epoch takes minutes on 2 cores.
DIN_SMALL = {"MAX_ITEM_LIST_LENGTH": 5, "time_window": ["1998-03-01", "1998-05-01"]}


@pytest.mark.parametrize(
    "model, options, test_rows",
    [("LightGCN", {}, 10000), ("BPR", {}, 10000), ("NeuMF", {}, 10000), ("FM", {}, 10000),
     ("DeepFM", {}, 10000), ("DIN", DIN_SMALL, 2201)],
)
def test_recbole_baselines_run_on_the_labeled_split_and_report_all_warm_cold(model, options, test_rows):
    options = {**QUIET, "epochs": 1, "train_batch_size": 4096, **options}
    out = run_recbole_cora(model=model, dataset="ml-100k", config_dict=options)
    test = out["test_result"]
    assert test["rows"] == test_rows and test["warm_rows"] + test["cold_rows"] == test_rows
    for group in ("", "warm_", "cold_"):
        assert 0.0 <= test[f"{group}auc"] <= 1.0 and 0.0 <= test[f"{group}uauc"] <= 1.0
        assert test[f"{group}logloss"] > 0
    for group in ("all", "warm", "cold"):
        assert f"| {model} | {group} |" in out["table"]
    folder = Path(out["results_dir"])
    rows = list(csv.DictReader(open(folder / "results.csv")))
    assert [r["group"] for r in rows] == ["all", "warm", "cold"]
    assert float(rows[0]["auc"]) == test["auc"] and float(rows[2]["uauc"]) == test["cold_uauc"]
    assert json.loads((folder / "results.json").read_text())[model]["auc"] == test["auc"]
    assert json.loads((folder / "config.json").read_text())["model"] == model


def test_command_line_with_config_file_and_overrides(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({"model": "BPR", "dataset": "ml-100k", "epochs": 3, "state": "WARNING"}))
    done = subprocess.run(
        [sys.executable, str(ROOT / "run_recbole_cora.py"), "--config_files", str(config), "--epochs=1", "--embedding_size=8"],
        capture_output=True, text=True, cwd=tmp_path, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "| BPR | cold |" in done.stdout
    saved = json.loads(next(tmp_path.glob("results/BPR-ml-100k-*/config.json")).read_text())
    assert saved["epochs"] == 1 and saved["embedding_size"] == 8


def test_command_line_errors_are_sentences_not_tracebacks(tmp_path):
    done = subprocess.run(
        [sys.executable, str(ROOT / "run_recbole_cora.py"), "--model", "LightGNC"],
        capture_output=True, text=True, cwd=tmp_path, timeout=120,
    )
    assert done.returncode == 2
    assert "error: unknown model 'LightGNC'" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize("model", ["DIN", "DIEN"])
def test_sequential_ctr_baselines_train_on_the_labeled_rows_only(model):
    # RecBole samples one negative per row for sequential models by default; FM/DeepFM and the LLM models
    # learn from the labeled rows as they are, and so must DIN and DIEN (properties/model/DIN.yaml)
    from recbole.data import data_preparation

    from recbole_cora.config import Config
    from recbole_cora.utils import create_dataset

    config = Config(model, "ml-100k", config_dict={**QUIET, **DIN_SMALL})
    assert config["train_neg_sample_args"]["distribution"] == "none"
    train, _, _ = data_preparation(config, create_dataset(config))
    labels = [batch[config["LABEL_FIELD"]] for batch in train]
    seen = sum(len(b) for b in labels)
    assert seen == len(train._dataset) and set(torch.cat(labels).tolist()) == {0.0, 1.0}
    assert torch.cat(labels).mean().item() == pytest.approx(train._dataset.inter_feat[config["LABEL_FIELD"]].float().mean().item())


def test_a_next_item_model_on_the_labeled_task_learns_the_next_positive_and_scores_every_row():
    """SASRec on the labeled split (CoLLM's and CoRA's SASRec row): trained on the train split's positive rows that
    follow a history, as RecBole's sequences are, with its own cross-entropy over all items; every valid/test row,
    a history or none, is scored by its predict."""
    from recbole.data import data_preparation

    from recbole_cora.config import Config
    from recbole_cora.utils import create_dataset

    options = {**QUIET, "task": "labeled", "epochs": 2, "train_batch_size": 512, "hidden_size": 16, "inner_size": 16,
               "n_layers": 1, "time_window": ["1998-03-01", "1998-05-01"]}
    config = Config("SASRec", "ml-100k", config_dict=options)
    assert config["train_neg_sample_args"]["distribution"] == "none"  # CE over all items: no sampled negatives
    dataset = create_dataset(config)
    train, _, test = data_preparation(config, dataset)
    feat = train._dataset.inter_feat
    assert bool((feat[config["LABEL_FIELD"]] == 1).all()) and bool((feat["item_id_list"] > 0).any(dim=1).all())
    assert len(test._dataset) == 2201 and int(test._dataset.inter_feat["item_length"].min()) == 1
    out = run_recbole_cora("SASRec", "ml-100k", config_dict=options)
    test_result = out["test_result"]
    assert test_result["rows"] == 2201 and 0.5 < test_result["auc"] <= 1.0
