"""Smoke test of benchmarks/bench_cora.py on the tiny LLM: it runs, reports every row, and our scores equal
the naive reference's. No timing is asserted (the numbers depend on the machine and its load)."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT

STEPS = ["cora_train_step", "cora_train_step_checkpointing", "cora_train_step_no_lora_dropout"]
ROWS = ["llm_floor", "cora_forward", "cora_factors", "naive_forward", "naive_train_step", "llm_forward_backward",
        *STEPS, "data_loading", "data_loading_first_epoch"]


def test_bench_cora_tiny_reports_every_row_and_agrees_with_the_naive_reference(tmp_path):
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_cora.py"), "--llm", "tiny", "--steps", "2", "--warmup", "1",
         "--batch-size", "8", "--device", "cpu", "--json", str(out), "--workdir", str(tmp_path / "work")],
        capture_output=True, text=True, cwd=tmp_path, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    result = json.loads(out.read_text())
    assert result["check"]["agree"] and result["check"]["max_abs_diff_ours_vs_naive"] <= result["check"]["atol"]
    assert result["check"]["max_abs_lora_effect"] > 0  # the LoRA path is not a no-op in the comparison
    assert set(result["rows"]) == set(ROWS)
    for name in ROWS:
        row = result["rows"][name]
        for key in ("ms", "samples_per_s", "tokens_per_s", "peak_mib"):
            assert math.isfinite(row[key]) and row[key] > 0, (name, key, row[key])
    for name in ("cora_forward", "cora_factors", "naive_forward", "naive_train_step", "llm_forward_backward", *STEPS):
        assert math.isfinite(result["rows"][name]["ratio_floor"]) and result["rows"][name]["ratio_floor"] > 0
    for name in STEPS:  # against the frozen LLM's own forward + backward
        assert math.isfinite(result["rows"][name]["ratio_train_floor"]) and result["rows"][name]["ratio_train_floor"] > 0
    padding = result["padding"]
    assert padding["rows"] > 0 and 0 <= padding["bucketed"] < padding["random"] < 1  # bucketing pads less
    for name in ("cora_forward", "cora_train_step"):
        assert math.isfinite(result["rows"][name]["ratio_naive"]) and result["rows"][name]["ratio_naive"] > 0
    for name in ("data_loading", "data_loading_first_epoch"):
        assert 0 < result["rows"][name]["share_of_train_step"] < 1
    assert "| CoRA train step |" in done.stdout  # the Markdown table


def test_bench_layer_runs_every_row_on_a_small_shape():
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_layer.py"), "--hidden", "64", "--intermediate", "128",
         "--heads", "4", "--kv-heads", "2", "--batch", "2", "--seq", "16", "--rank", "4", "--reps", "2",
         "--warmup", "1", "--device", "cpu"],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    rows = [line for line in done.stdout.splitlines() if line.startswith("| ") and not line.startswith("| row")]
    assert [r.split(" | ")[0][2:] for r in rows] == ["layer forward", "+ CoRA forward", "layer forward+backward",
                                                       "+ CoRA forward+backward"]
    for row in rows[1::2]:  # the CoRA rows have a finite ratio to their floor
        assert math.isfinite(float(row.split(" | ")[3].rstrip(" |")))


def test_bench_laser_runs_and_prints_every_row():
    import subprocess
    import sys

    from conftest import ROOT

    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_laser.py"), "--steps", "1", "--warmup", "0"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    for row in ("LLM floor (users)", "Laser user vectors", "Laser train step", "LLM floor (items)",
                "Laser item vectors", "item-matrix pass"):
        assert f"| {row} |" in done.stdout, row


def test_diagnose_cora_measures_every_step_and_the_spread_of_A(tiny_llm, tmp_path):
    import json
    import subprocess
    import sys

    from conftest import ROOT

    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "diagnose_cora.py"), "--out", str(tmp_path / "d"),
         f"--llm_path={tiny_llm}", "--train_rows_per_epoch=64", "--eval_rows=100", "--query_layers=1",
         "--query_width=32", "--query_heads=2", '--cf_config={"epochs": 2}'],
        capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "d" / "diagnosis.json").read_text())
    assert [s["step"] for s in report["steps"]] == [1, 2, 3, 4]  # 64 rows, batches of 16
    assert report["steps"][0]["lr"] > 0 and report["steps"][0]["grad_query_generator"] == 0  # P = 0 at step 1
    assert sorted(map(int, report["delta"])) == [0, 1, 3, 4] and 0 < report["test_A_pair_cosine"] <= 1
    assert (tmp_path / "d" / "diagnosis.png").is_file() and "| zero-shot (frozen LLM) |" in done.stdout


def test_probe_reclora_gates_tells_a_shared_mixture_from_personal_ones():
    import importlib.util

    import torch

    from recbole_cora.model.layers import MetaLoRAGates

    spec = importlib.util.spec_from_file_location("probe_reclora_gates", ROOT / "benchmarks" / "probe_reclora_gates.py")
    probe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(probe)

    class Model:  # what the probe reads of a RecLoRA model: its representation u and its gates
        def __init__(self, gates):
            self.gates = gates

        def user_representation(self, interaction):
            return interaction

    torch.manual_seed(0)
    gates = MetaLoRAGates(["q", "v"], input_size=8, num_loras=4, hidden_size=16, temperature=5.0, dropout=0.0).eval()
    batches = [torch.randn(32, 8), torch.randn(32, 8)]
    for gate in gates.gates.values():  # last layer zero: every sample gets the uniform mixture, one shared LoRA
        torch.nn.init.zeros_(gate[-1].weight)
        torch.nn.init.zeros_(gate[-1].bias)
    shared = probe.mixture_stats(Model(gates), batches)
    assert shared["rows"] == 64 and shared["meta_loras"] == 4
    assert abs(shared["alpha_entropy"] - 1) < 1e-6 and shared["alpha_tv_to_mean"] < 1e-6
    assert abs(shared["alpha_max"] - 0.25) < 1e-6
    for gate in gates.gates.values():  # large logits: each sample picks its own meta-LoRAs
        torch.nn.init.normal_(gate[-1].weight, std=50.0)
    personal = probe.mixture_stats(Model(gates), batches)
    assert personal["alpha_tv_to_mean"] > 0.3 and personal["alpha_entropy"] < 0.7 and personal["alpha_max"] > 0.5
    assert -1 <= personal["u_cosine"] <= 1 and personal["u_cosine"] == shared["u_cosine"]


@pytest.mark.parametrize("model,task", [("Laser", "next_item"), ("RSLLM", "candidates")])
def test_diagnose_reports_the_loss_against_the_trivial_one_and_what_each_model_is_diagnosed_by(tiny_llm, tmp_path, model, task):
    """benchmarks/diagnose.py on the planted next-item data: per-step loss and gradient groups, the trivial loss of
    the task, Laser's anisotropy, RSLLM's correlation of scores with answer length."""
    import yaml

    import planted
    from conftest import ROOT

    planted.next_item(tmp_path / "data")
    options = {**planted.OPTIONS, "MAX_ITEM_LIST_LENGTH": 11, "data_path": str(tmp_path / "data"), "task": task,
               "llm_path": tiny_llm, "train_batch_size": 16, "eval_batch_size": 16, "history_len": 4,
               "stage1_epochs": 1, "stage2_epochs": 1, "train_rows_per_epoch": 32, "eval_rows": 24,
               "lora_rank": 4, "lora_alpha": 8, "lora_target_modules": ["q_proj", "v_proj"],
               "cf_checkpoint_dir": str(tmp_path / "stages"),
               "sequential_encoder_config": {"epochs": 2, "hidden_size": 16, "n_layers": 1, "n_heads": 1,
                                             "inner_size": 32, "train_batch_size": 256}}
    if model == "Laser":
        options.update({"mformer_layers": 1, "mformer_width": 32, "mformer_heads": 2, "num_queries": 4,
                        "num_experts": 4, "user_vector_size": 32})
    else:
        options.update({"candidate_count": 6, "generate_answers": False})
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({**options, "dataset": "planted-next"}))
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "diagnose.py"), "--model", model,
                           "--config_files", str(config), "--out", str(tmp_path / "d")],
                          capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "d" / "diagnosis.json").read_text())
    assert [s["stage"] for s in report["steps"]] == [1, 1, 2, 2]  # 32 rows in batches of 16, two stages
    # both default to the encoder residual, whose gate is fitted on valid, which a diagnosis skips: it scores the
    # LLM's own score, and says so (else both columns would be the frozen encoder's ranking)
    assert "LLM's own score" in report["scores"] and "Scored: the LLM's own score" in done.stdout
    assert all(s["loss"] > 0 and s["grad"] for s in report["steps"])
    assert "LoRA" in report["steps"][0]["grad"] or model == "Laser"
    for when in ("untrained", "trained"):
        assert report[when]["metrics"]["ndcg@10"] >= 0 and report[when]["score_std"] >= 0
    if model == "Laser":
        assert abs(report["trivial_loss"] - math.log(40)) < 1e-9  # a uniform guess over the 40 items
        assert 0 < report["untrained"]["item_energy_top3"] <= 1 and -1 <= report["trained"]["item_pair_cosine"] <= 1
    else:
        assert abs(report["trivial_loss"] - math.log(6)) < 1e-9
        # each term of RSLLM's loss per step, unweighted; the total is their weighted sum (0.1 each)
        assert [set(s["terms"]) for s in report["steps"]] == [{"lm", "user_item"}] * 2 + [{"lm", "user_item", "id_text"}] * 2
        for s in report["steps"]:
            t = s["terms"]
            assert abs(s["loss"] - t["lm"] - 0.1 * t["user_item"] - 0.1 * t.get("id_text", 0.0)) < 1e-4
        assert "| step | loss | lm | user_item | id_text | lr |" in done.stdout
        assert -1 <= report["untrained"]["spearman_score_vs_answer_length"] <= 1
    assert (tmp_path / "d" / "diagnosis.png").is_file() and "Trivial loss" in done.stdout


@pytest.mark.parametrize("model,preset", [("TALLRec", "CoRA"), ("CoLLM", "CoRA"), ("Laser", "Laser"), ("RSLLM", "RSLLM")])
def test_diagnose_without_config_files_runs_the_model_s_embedded_default(model, preset):
    """``diagnose.py --model TALLRec`` (no config files) named a constant that no longer exists and stopped at once."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("diagnose", ROOT / "benchmarks" / "diagnose.py")
    diagnose = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(diagnose)
    path = Path(diagnose.embedded_files(model))
    assert path.is_file() and path.parent.name == "presets" and preset in path.read_text(), path
