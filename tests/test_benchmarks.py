"""Smoke test of benchmarks/bench_cora.py on the tiny LLM: it runs, reports every row, and our scores equal
the naive reference's. No timing is asserted (the numbers depend on the machine and its load)."""

import json
import math
import subprocess
import sys

from conftest import ROOT

ROWS = ["llm_floor", "cora_forward", "cora_factors", "cora_train_step", "naive_forward", "naive_train_step",
        "data_loading", "data_loading_first_epoch"]


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
    for name in ("cora_forward", "cora_factors", "cora_train_step", "naive_forward", "naive_train_step"):
        assert math.isfinite(result["rows"][name]["ratio_floor"]) and result["rows"][name]["ratio_floor"] > 0
    for name in ("cora_forward", "cora_train_step"):
        assert math.isfinite(result["rows"][name]["ratio_naive"]) and result["rows"][name]["ratio_naive"] > 0
    for name in ("data_loading", "data_loading_first_epoch"):
        assert 0 < result["rows"][name]["share_of_train_step"] < 1
    assert "| CoRA train step |" in done.stdout  # the Markdown table
