"""Tuning in RecBole's params-file format (recbole_cora.tuning): the trial table, the best YAML that reruns the best
trial, stages trained once across trials, parallel workers that give the sequential table, and one sentence for a
bad params file before any trial starts."""

import csv
import logging
from pathlib import Path

import pytest

from recbole_cora.quick_start import run_recbole_cora
from recbole_cora.tuning import ParamsFileError, read_params_file, tune

from conftest import QUIET, SMALL_CORA
from test_cf_stage import small_data

BPR = {**QUIET, "model": "BPR", "epochs": 1, "train_batch_size": 256, "eval_args": {
    "split": {"RS": [0.7, 0.15, 0.15]}, "order": "TO", "group_by": None, "mode": "labeled"}, "threshold": {"rating": 4}}


def bpr_options(tmp_path):
    return {**BPR, "data_path": small_data(tmp_path), "dataset": "cfsmall"}


def write(tmp_path, text, name="hyper.test"):
    path = tmp_path / name
    path.write_text(text)
    return path


def table(folder):
    with open(Path(folder) / "trials.csv") as f:
        return list(csv.DictReader(f))


def test_a_grid_of_two_trials_on_a_recbole_baseline_gives_a_table_and_a_best_yaml_that_reruns_it(tmp_path):
    options = bpr_options(tmp_path)
    params = write(tmp_path, "learning_rate choice [0.001, 0.05]   # two values\n\n")
    out = tune(params, config_dict=options, folder=tmp_path / "tune")
    rows = table(out["folder"])
    assert [(r["trial"], r["state"], r["learning_rate"]) for r in rows] == [("0", "complete", "0.001"), ("1", "complete", "0.05")]
    valid = {float(r["learning_rate"]): float(r["valid auc"]) for r in rows}
    best = max(valid, key=valid.get)
    assert out["best"]["values"] == {"learning_rate": best} and out["best"]["valid"] == valid[best]
    assert [r["chosen"] for r in rows].count("True") == 1
    text = (Path(out["folder"]) / "trials.md").read_text()
    assert "Test of the chosen trial only" in text and text.count("test") == 0  # no test column for any trial
    again = run_recbole_cora(config_file_list=[str(Path(out["folder"]) / "best.yaml")])
    assert again["best_valid_score"] == pytest.approx(out["best"]["valid"], abs=1e-4)
    assert again["test_result"]["auc"] == pytest.approx(out["best"]["test"]["auc"], abs=1e-4)


def test_parallel_workers_give_the_sequential_table_of_a_grid(tmp_path):
    options = bpr_options(tmp_path)
    params = write(tmp_path, "learning_rate choice [0.001,0.05]\nembedding_size choice [8,16]\n")
    one = table(tune(params, config_dict=options, folder=tmp_path / "one")["folder"])
    two = table(tune(params, config_dict=options, folder=tmp_path / "two", workers=2)["folder"])
    key = ("trial", "learning_rate", "embedding_size", "valid auc", "chosen")
    assert len(one) == 4 and [[r[k] for k in key] for r in one] == [[r[k] for k in key] for r in two]


def test_a_tuning_run_of_an_llm_model_trains_its_stage_once(tmp_path, tiny_llm, caplog):
    options = {**SMALL_CORA, "model": "CoRA", "dataset": "ml-100k", "llm_path": tiny_llm, "epochs": 1,
               "train_rows_per_epoch": 32, "eval_rows": 32, "zero_shot_row": False}
    params = write(tmp_path, "learning_rate choice [0.001,0.01]\n")
    with caplog.at_level(logging.INFO):
        out = tune(params, config_dict=options, folder=tmp_path / "tune")
    assert [r["state"] for r in table(out["folder"])] == ["complete", "complete"]
    assert caplog.text.count("LightGCN stage: training on") == 1
    assert caplog.text.count("LightGCN stage: reusing") >= 1
    assert "| CoRA |" in out["table"]


@pytest.mark.parametrize("text, said", [
    ("learing_rate choice [0.01]\n", "'learing_rate' is not an option of BPR (did you mean 'learning_rate'?)"),
    ("learning_rate choice [0.01, -1]\n", "learning_rate -1 (choice [0.01, -1]): learning_rate -1: give a number of at least 0"),
    ("train_batch_size quniform 0,256,64\n", "train_batch_size 0 (quniform [0.0, 256.0, 64.0]): train_batch_size 0: give a whole number of at least 1"),
    ("learning_rate choice [0.01,\n", "line 1"),
    ("learning_rate normal 0,1\n", "kind 'normal' is unknown"),
    ("learning_rate uniform 0.1,0.01\n", "give low < high"),
    ("# nothing\n", "names no option"),
])
def test_a_bad_params_file_gets_one_sentence_before_any_trial(tmp_path, text, said):
    params = write(tmp_path, text)
    with pytest.raises(ParamsFileError, match=None) as err:
        tune(params, config_dict=bpr_options(tmp_path), folder=tmp_path / "tune")
    assert said in str(err.value)
    assert not (tmp_path / "tune").exists()  # nothing ran


def test_a_grid_needs_choices_and_the_file_is_read_as_recbole_writes_it(tmp_path):
    params = read_params_file(write(tmp_path, "learning_rate loguniform -8,0\nembedding_size choice [32,64]\nn quniform 1,4,1\n"))
    assert params["learning_rate"].extremes() == pytest.approx([0.00033546, 1.0], rel=1e-4)
    assert params["embedding_size"].values == (32, 64) and params["n"].values == (1.0, 4.0, 1.0)
    with pytest.raises(ParamsFileError, match="exhaustive searches a grid of `choice` options"):
        tune(write(tmp_path, "learning_rate uniform 0.001,0.01\n"), config_dict=bpr_options(tmp_path),
             folder=tmp_path / "t", algo="exhaustive")


def test_a_worker_that_draws_past_the_end_of_a_grid_runs_nothing_and_adds_no_row(tmp_path, monkeypatch):
    # Two workers race for a grid's last point: the loser's draw is not a grid point. Made certain here by a worker
    # that does not stop when the queue is empty.
    import recbole_cora.tuning as tuning

    monkeypatch.setattr(tuning, "_stop_when_queue_empty", lambda study, trial: None)
    import recbole_cora.quick_start as quick_start

    runs, original = [], quick_start.run_recbole_cora

    def counted(*args, **kwargs):
        runs.append(kwargs["config_dict"]["learning_rate"])
        return original(*args, **kwargs)

    monkeypatch.setattr(quick_start, "run_recbole_cora", counted)
    out = tune(write(tmp_path, "learning_rate choice [0.001,0.05]\n"), config_dict=bpr_options(tmp_path),
               folder=tmp_path / "tune")
    assert runs == [0.001, 0.05]  # the draw past the grid ran nothing
    assert [r["trial"] for r in table(out["folder"])] == ["0", "1"]


def test_compare_with_a_tune_budget_tunes_each_model_on_valid_and_says_so(tmp_path):
    from recbole_cora.compare import run_comparison, write_comparison

    options = {k: v for k, v in bpr_options(tmp_path).items() if k != "model"}
    params = write(tmp_path, "learning_rate choice [0.001,0.01,0.05]\n")
    results = run_comparison(["BPR", "Pop"], tmp_path / "cmp", config_dict=options, tune_budget=2, params_file=params)
    text = write_comparison(tmp_path / "cmp", results)
    tuned = results["BPR"]["tuned"]
    assert tuned["trials"] == 2 and tuned["space"] == "hyper.test"  # 2 random draws of a 3-point grid
    rows = table(tmp_path / "cmp" / "runs" / "BPR" / "tune")
    chosen = next(r for r in rows if r["chosen"] == "True")
    assert float(chosen["learning_rate"]) == tuned["values"]["learning_rate"]
    assert "Tuned on valid before its test row: BPR (2 trials of hyper.test" in text and "| BPR | all |" in text
    assert "Pop (" in text  # every RecBole model has a learning_rate (Pop's changes nothing)
    (tmp_path / "plain").mkdir()
    plain = write_comparison(tmp_path / "plain", {"BPR": {k: v for k, v in results["BPR"].items() if k != "tuned"}})
    assert "None tuned: every model ran with this comparison's files and options" in plain


def test_every_model_gets_a_search_space_for_a_comparison():
    from recbole_cora.compare import default_params_file

    assert default_params_file("LightGCN").name == "LightGCN.test"
    assert default_params_file("MF").name == "BPR.test"
    assert default_params_file("CoRA").name == "llm.test" and default_params_file("NeuMF").name == "recbole.test"
    for name in ("LightGCN", "BPR", "SASRec", "recbole", "llm"):
        from recbole_cora.config import PROPERTIES_DIR

        assert read_params_file(PROPERTIES_DIR / "hyper" / f"{name}.test")


def test_a_random_search_of_choices_never_runs_a_point_twice_and_a_failing_trial_says_why(tmp_path):
    options = bpr_options(tmp_path)
    params = write(tmp_path, "learning_rate choice [0.001,0.01,0.05,0.1]\n")
    rows = table(tune(params, config_dict=options, folder=tmp_path / "random", algo="random", trials=3)["folder"])
    assert len(rows) == 3 and len({r["learning_rate"] for r in rows}) == 3
    params = write(tmp_path, "embedding_size choice [8,'wide']\n", "bad.test")
    out = tune(params, config_dict=options, folder=tmp_path / "bad")
    rows = table(out["folder"])
    assert [r["state"] for r in rows] == ["complete", "fail"] and "TypeError" in rows[1]["note"]
    assert out["best"]["values"] == {"embedding_size": 8}


def test_pruning_stops_a_trial_whose_valid_metric_falls_below_the_median_of_the_earlier_ones(tmp_path):
    options = {**bpr_options(tmp_path), "epochs": 3, "eval_step": 1, "stopping_step": 10}
    params = write(tmp_path, "learning_rate choice [0.05,0.04,0.0000001]\n")
    out = tune(params, config_dict=options, folder=tmp_path / "prune", prune=True)
    rows = table(out["folder"])
    assert [r["state"] for r in rows] == ["complete", "complete", "pruned"], rows
    assert rows[2]["note"] == "evaluation 1 (epoch 1)" and rows[2]["valid auc"] == ""
    assert out["best"]["values"] == {"learning_rate": 0.05}


KILLED_TRIAL = """
import sys, time
sys.path.insert(0, {tests!r})
import recbole_cora.quick_start as quick_start
import recbole_cora.tuning as tuning
tuning.HEARTBEAT_SECONDS, tuning.STALE_SECONDS = 1, 2
real = quick_start.run_recbole_cora
def slow(*args, **kwargs):
    if kwargs["config_dict"]["learning_rate"] == 0.05:
        time.sleep(1.5)  # the trial's first heartbeat is written by its own thread, a moment after it starts
        print("RUNNING", flush=True)
        time.sleep(600)
    return real(*args, **kwargs)
quick_start.run_recbole_cora = slow
from test_tuning import bpr_options
from pathlib import Path
tuning.tune({params!r}, config_dict=bpr_options(Path({tmp!r})), folder={folder!r})
"""


def test_a_trial_killed_with_its_process_is_run_again_by_the_next_tuning_run(tmp_path, monkeypatch):
    import os
    import signal
    import subprocess
    import sys
    import time

    import recbole_cora.tuning as tuning

    params, folder = write(tmp_path, "learning_rate choice [0.001,0.05]\n"), tmp_path / "tune"
    script = KILLED_TRIAL.format(tests=str(Path(__file__).parent), params=str(params), tmp=str(tmp_path / "data"),
                                 folder=str(folder))
    (tmp_path / "data").mkdir()
    worker = subprocess.Popen([sys.executable, "-c", script], cwd=tmp_path, text=True, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])})
    assert any(line.strip() == "RUNNING" for line in iter(worker.stdout.readline, ""))  # trial 1 is running
    worker.send_signal(signal.SIGKILL)
    worker.wait(timeout=60)
    monkeypatch.setattr(tuning, "HEARTBEAT_SECONDS", 1)
    monkeypatch.setattr(tuning, "STALE_SECONDS", 2)
    time.sleep(3)
    out = tune(params, config_dict=bpr_options(tmp_path / "data"), folder=folder)  # the same command again
    rows = table(out["folder"])
    assert [(r["trial"], r["state"], r["learning_rate"]) for r in rows] == [
        ("0", "complete", "0.001"), ("1", "fail", "0.05"), ("2", "complete", "0.05")], rows
    assert rows[1]["note"] == "its process stopped (no heartbeat): run again as trial 2"
    assert rows[2]["note"] == "run again for trial 1"
