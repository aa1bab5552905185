"""The learning curve of an LLM run (``curve_epochs``): the test rows scored with the weights of those epochs."""

import csv
from pathlib import Path

from recbole_cora import run_recbole_cora

from conftest import SMALL_CORA


def test_curve_points_are_the_test_scores_of_those_epochs_and_are_kept_once(tiny_llm, monkeypatch):
    from recbole_cora.training.evaluation import EvaluationLoop

    passes = []  # (model, the data scored) of every scoring pass: all go through the evaluation loop
    evaluate = EvaluationLoop.evaluate

    def counted(self, model, eval_data, *args, **kwargs):
        passes.append((type(model).__name__, id(eval_data)))
        return evaluate(self, model, eval_data, *args, **kwargs)

    monkeypatch.setattr(EvaluationLoop, "evaluate", counted)
    options = {**SMALL_CORA, "llm_path": tiny_llm, "train_rows_per_epoch": 32, "eval_rows": 60, "epochs": 2,
               "eval_step": 2, "curve_epochs": [1, 2], "zero_shot_row": False}
    out = run_recbole_cora("CoRA", "ml-100k", config_dict=options)
    curve = out["curve"]
    assert [(p["epoch"], p["train_rows"]) for p in curve] == [(1, 32), (2, 64)]
    # validated once, after epoch 2: the best model is the last one, so the test result is the last curve point
    for key in ("auc", "uauc", "logloss", "rows"):
        assert curve[-1][key] == out["test_result"][key], key
    # ... taken from it, not scored again: CoRA's passes are the two curve points and valid (the frozen LightGCN's
    # own row is one more, on the test rows)
    cora = [data for name, data in passes if name == "CoRA"]
    test = [data for name, data in passes if name != "CoRA"]
    assert len(cora) == 3 and cora.count(test[0]) == 2, passes
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
    from recbole_cora.training import LLMTrainer
    from recbole_cora.utils import create_dataset

    config = Config("TALLRec", "ml-100k", config_dict={**SMALL_CORA, "llm_path": tiny_llm, "eval_rows": 40,
                                                        "curve_epochs": [1]})
    init_seed(config["seed"], config["reproducibility"])
    train, valid, test = data_preparation(config, create_dataset(config))
    from recbole_cora.training.callbacks import TrainEvent

    trainer = LLMTrainer(config, TALLRec(config, train._dataset))
    trainer.curve_data = test
    event = TrainEvent(epoch=0, rows=32, seconds=1.0, model_file=trainer.saved_model_file)
    trainer.curve.point(event)
    trainer.curve.point(event)  # as a run resumed after that point would try
    assert [p["epoch"] for p in trainer.curve_points()] == [1]


def test_the_schedule_trains_from_the_first_step_and_ends_at_its_floor(tiny_llm):
    """Warm-up from warmup_start_lr (transformers' cosine schedule starts at 0: step 1 learned nothing), then cosine
    down to min_learning_rate."""
    import torch
    from recbole.data import data_preparation
    from recbole.utils import init_seed

    from recbole_cora.config import Config
    from recbole_cora.model.llm_recommender.tallrec import TALLRec
    from recbole_cora.training import LLMTrainer
    from recbole_cora.utils import create_dataset

    config = Config("TALLRec", "ml-100k", config_dict={
        **SMALL_CORA, "llm_path": tiny_llm, "learning_rate": 1e-3, "warmup_ratio": 0.1, "epochs": 1,
        "warmup_start_lr": 1e-5, "min_learning_rate": 8e-5})
    init_seed(config["seed"], config["reproducibility"])
    train, _, _ = data_preparation(config, create_dataset(config))
    trainer = LLMTrainer(config, TALLRec(config, train._dataset))
    scheduler = trainer.build_scheduler(32)  # 3 warm-up steps of 32
    rates = []
    for _ in range(32):
        rates.append(trainer.optimizer.param_groups[0]["lr"])
        trainer.optimizer.step()
        scheduler.step()
    assert abs(rates[0] - 1e-5) < 1e-12 and rates[1] > rates[0] and abs(max(rates) - 1e-3) < 1e-12
    assert rates.index(max(rates)) == 3 and all(a >= b for a, b in zip(rates[3:], rates[4:]))
    assert rates[-1] > 8e-5 and abs(trainer.optimizer.param_groups[0]["lr"] - 8e-5) < 1e-12
    state = scheduler.state_dict()  # a resumed run goes on with the same schedule
    again = trainer.build_scheduler(32)
    again.load_state_dict(state)
    assert torch.isclose(torch.tensor(again.get_last_lr()[0]), torch.tensor(8e-5))
