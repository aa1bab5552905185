"""Two CPU processes (torchrun) against one: the same metrics, every evaluation row exactly once."""

import json
import socket
import subprocess
import sys

from conftest import ROOT

OPTIONS = [
    "--model", "CoRA", "--dataset", "ml-100k", "--state=INFO", "--show_progress=False",
    "--query_layers=1", "--query_width=32", "--query_heads=2", "--num_queries=2", "--lora_rank=4", "--lora_alpha=8",
    "--query_dropout=0.0", "--lora_dropout=0.0", "--train_rows_per_epoch=64", "--eval_rows=201",
    "--epochs=1", "--train_batch_size=16", "--eval_batch_size=32",
    "--time_window=['1998-03-01','1998-05-01']", "--cf_config={'epochs':3,'embedding_size':16}",
]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(cmd, cwd):
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    result = json.loads(next(cwd.glob("results/CoRA-*/results.json")).read_text())
    return result, done.stdout + done.stderr


def test_two_processes_give_the_metrics_of_one(tmp_path, tiny_llm):
    common = OPTIONS + [f"--llm_path={tiny_llm}", f"--cf_checkpoint_dir={tmp_path / 'cf'}"]
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    one, log_one = run([sys.executable, str(ROOT / "run_recbole_cora.py"), *common], tmp_path / "one")
    two, log_two = run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
         "--master_port", str(free_port()), str(ROOT / "run_recbole_cora.py"), *common],
        tmp_path / "two",
    )
    assert "1 process(es)" in log_one and "2 process(es)" in log_two
    for name in ("CoRA", "LightGCN (frozen CF encoder)"):
        assert one[name]["rows"] == two[name]["rows"] == 201  # all rows, none twice (201 splits unevenly)
        assert one[name]["warm_rows"] == two[name]["warm_rows"]
        for metric in ("auc", "uauc", "logloss"):
            assert abs(one[name][metric] - two[name][metric]) <= 2e-3, (name, metric, one[name], two[name])
    # the frozen CF encoder's row does not depend on training at all: identical
    assert one["LightGCN (frozen CF encoder)"]["auc"] == two["LightGCN (frozen CF encoder)"]["auc"]

    # the one-process run's saved model scores a pairs file the same in one process and in two (17: uneven)
    trained = next((tmp_path / "one").glob("results/CoRA-*"))
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("".join(f"{u}\t{i}\n" for u, i in zip(range(180, 197), range(240, 257))))
    predict = [str(ROOT / "run_recbole_cora.py"), "--predict", str(trained), "--pairs", str(pairs), "--show_progress=False"]
    for cwd, prefix in ((tmp_path / "one", [sys.executable]), (tmp_path / "two", [
            sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
            "--master_port", str(free_port())])):
        done = subprocess.run(prefix + predict + ["--out", str(cwd / "scores.tsv")], capture_output=True, text=True,
                              cwd=cwd, timeout=600)
        assert done.returncode == 0, done.stderr[-4000:]
    lines = (tmp_path / "one" / "scores.tsv").read_text().splitlines()
    assert len(lines) == 18 and lines == (tmp_path / "two" / "scores.tsv").read_text().splitlines()


def test_two_processes_rank_every_next_item_user_once_with_the_metrics_of_one(tmp_path, tiny_llm):
    """Laser (next-item): the item matrix and the users are split between processes and gathered; every test user is
    ranked exactly once, the frozen BERT4Rec's row is identical, and Laser's metrics agree within one user's hit."""
    import yaml

    from helpers import SLICE_OPTIONS, ml100k_slice

    options = {
        **SLICE_OPTIONS, "model": "Laser", "dataset": "ml100k-slice", "data_path": ml100k_slice(tmp_path),
        "llm_path": tiny_llm, "cf_checkpoint_dir": str(tmp_path / "stages"), "state": "INFO", "show_progress": False,
        "mformer_layers": 2, "mformer_width": 32, "mformer_heads": 2, "num_queries": 4, "num_experts": 4,
        "mformer_dropout": 0.0, "user_vector_size": 32, "history_len": 5, "stage1_epochs": 1, "stage2_epochs": 0,
        "train_rows_per_epoch": 64, "train_batch_size": 16, "eval_batch_size": 16, "eval_rows": 61,
        "sequential_encoder_config": {"epochs": 2, "hidden_size": 16, "n_layers": 1, "n_heads": 1, "inner_size": 32},
    }
    config = tmp_path / "laser.yaml"
    config.write_text(yaml.safe_dump(options))
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()

    def result(cmd, cwd):
        done = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, timeout=600)
        assert done.returncode == 0, done.stderr[-4000:]
        return json.loads(next(cwd.glob("results/Laser-*/results.json")).read_text()), done.stdout + done.stderr

    script = [str(ROOT / "run_recbole_cora.py"), "--config_files", str(config)]
    one, log_one = result([sys.executable, *script], tmp_path / "one")
    two, log_two = result([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr",
                           "127.0.0.1", "--master_port", str(free_port()), *script], tmp_path / "two")
    assert "1 process(es)" in log_one and "2 process(es)" in log_two
    reference = "BERT4Rec (frozen sequential encoder)"
    assert one[reference] == {k: v for k, v in two[reference].items()}  # no training: identical
    assert one["Laser"]["users"] == two["Laser"]["users"] == 61  # every user once (61 splits unevenly)
    for key in ("hit@10", "hit@20", "recall@10", "ndcg@10", "mrr@10"):
        assert abs(one["Laser"][key] - two["Laser"][key]) <= 1 / 61 + 1e-9, (key, one["Laser"], two["Laser"])


def test_two_processes_rank_every_candidate_list_once_and_draw_the_same_lists(tmp_path, tiny_llm):
    """RSLLM (task: candidates): the lists drawn in a two-process run are the one-process run's, byte for byte; every
    test user's list is scored and answered exactly once; the frozen SASRec's row is identical."""
    import yaml

    from helpers import SLICE_OPTIONS, ml100k_slice

    options = {
        **SLICE_OPTIONS, "model": "RSLLM", "dataset": "ml100k-slice", "data_path": ml100k_slice(tmp_path),
        "llm_path": tiny_llm, "state": "INFO", "show_progress": False, "history_len": 3, "candidate_count": 5,
        "max_answer_tokens": 44, "lora_target_modules": ["q_proj", "v_proj"], "lora_dropout": 0.0, "stage1_epochs": 1,
        "stage2_epochs": 0, "train_rows_per_epoch": 8, "train_batch_size": 4, "eval_batch_size": 4, "eval_rows": 13,
        "sequential_encoder_config": {"epochs": 1, "hidden_size": 16, "n_layers": 1, "n_heads": 1, "inner_size": 32},
    }
    results, files = {}, {}
    for name, prefix in (("one", [sys.executable]), ("two", [
            sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
            "--master_port", str(free_port())])):
        cwd = tmp_path / name
        cwd.mkdir()
        config = cwd / "rsllm.yaml"
        config.write_text(yaml.safe_dump({**options, "cf_checkpoint_dir": str(cwd / "stages")}))
        done = subprocess.run(prefix + [str(ROOT / "run_recbole_cora.py"), "--config_files", str(config)],
                              capture_output=True, text=True, cwd=cwd, timeout=600)
        assert done.returncode == 0, done.stderr[-4000:]
        assert f"{1 if name == 'one' else 2} process(es)" in done.stdout + done.stderr
        results[name] = json.loads(next(cwd.glob("results/RSLLM-*/results.json")).read_text())
        files[name] = {f.name: f.read_text() for f in (cwd / "stages" / "candidates").glob("*.json")}
    assert len(files["one"]) == 2 and files["one"] == files["two"]
    one, two = results["one"], results["two"]
    assert one["SASRec (frozen sequential encoder)"] == two["SASRec (frozen sequential encoder)"]
    assert one["RSLLM"]["users"] == two["RSLLM"]["users"] == 13
    for key in ("hit@1", "hit@5", "ndcg@5", "valid_ratio", "hit_ratio@1_all"):
        assert abs(one["RSLLM"][key] - two["RSLLM"][key]) <= 1 / 13 + 1e-9, (key, one["RSLLM"], two["RSLLM"])
