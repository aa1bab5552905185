"""The learning curve of an LLM run (``curve_epochs``): the test rows scored with the weights of those epochs."""

import csv
from pathlib import Path

from recbole_cora import run_recbole_cora

from conftest import SMALL_CORA


def test_curve_points_are_the_test_scores_of_those_epochs_and_are_kept_once(tiny_llm):
    options = {**SMALL_CORA, "llm_path": tiny_llm, "train_rows_per_epoch": 32, "eval_rows": 60, "epochs": 2,
               "eval_step": 2, "curve_epochs": [1, 2], "zero_shot_row": False}
    out = run_recbole_cora("CoRA", "ml-100k", config_dict=options)
    curve = out["curve"]
    assert [(p["epoch"], p["train_rows"]) for p in curve] == [(1, 32), (2, 64)]
    # validated once, after epoch 2: the best model is the last one, so the test result is the last curve point
    for key in ("auc", "uauc", "logloss", "rows"):
        assert curve[-1][key] == out["test_result"][key], key
    assert curve[0]["auc"] != curve[1]["auc"]  # epoch 1's weights were scored, not the final ones
    with open(Path(out["results_dir"]) / "curve.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["train_rows"]) for r in rows] == [32, 64] and float(rows[1]["auc"]) == curve[1]["auc"]
    files = list(Path("saved").glob("CoRA-*.curve.jsonl"))
    assert len(files) == 1 and len(files[0].read_text().splitlines()) == 2


def test_a_resumed_run_does_not_measure_a_curve_point_twice(tiny_llm):
    from recbole.data import data_preparation
    from recbole.utils import init_seed

    from recbole_cora.config import Config
    from recbole_cora.model.llm_recommender.tallrec import TALLRec
    from recbole_cora.trainer import LLMTrainer
    from recbole_cora.utils import create_dataset

    config = Config("TALLRec", "ml-100k", config_dict={**SMALL_CORA, "llm_path": tiny_llm, "eval_rows": 40,
                                                        "curve_epochs": [1]})
    init_seed(config["seed"], config["reproducibility"])
    train, valid, test = data_preparation(config, create_dataset(config))
    trainer = LLMTrainer(config, TALLRec(config, train._dataset))
    trainer.curve_data = test
    trainer._curve_point(0, 32, 1.0)
    trainer._curve_point(0, 32, 1.0)  # as a run resumed after that point would try
    assert [p["epoch"] for p in trainer.curve_points()] == [1]
