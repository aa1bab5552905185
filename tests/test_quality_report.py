"""benchmarks/quality.py: every row of the study gets a colour of its own; a model's process keeps the caller's PYTHONPATH."""

import importlib.util
import json
import os
from pathlib import Path


def _quality():
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "quality.py"
    spec = importlib.util.spec_from_file_location("quality_benchmark", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_no_two_models_of_the_study_share_a_colour_and_the_frozen_llm_is_grey():
    quality = _quality()
    names = list(quality.VARIANTS)  # the whole study: ZeroShot, five LLM rows, four RecBole baselines
    colours = quality.colour_map(names)
    assert set(colours) == set(names)
    assert len(set(colours.values())) == len(names), colours  # LightGCN was grey like ZeroShot before
    assert colours["ZeroShot"] == "#7f7f7f"


def test_a_model_process_keeps_the_callers_pythonpath_after_the_checkout():
    quality = _quality()
    env = quality.child_env({"PYTHONPATH": "/opt/site", "HOME": "/root"})
    assert env["PYTHONPATH"].split(os.pathsep) == [str(quality.ROOT), "/opt/site"]
    assert env["HOME"] == "/root"
    assert quality.child_env({})["PYTHONPATH"] == str(quality.ROOT)


def _run_folder(out, name, results, curve=None):
    folder = out / "runs" / name / f"{name}-ml-1m-Dec-04-2026_18-00-00"
    folder.mkdir(parents=True)
    (folder / "results.json").write_text(json.dumps(results))
    if curve:
        (folder / "curve.csv").write_text(curve)


def test_the_report_takes_a_model_missing_from_out_from_rows_from_and_names_each_rows_folder(tmp_path):
    quality = _quality()
    gpu, cpu = tmp_path / "ml-1m-h200", tmp_path / "ml-1m"
    _run_folder(gpu, "TALLRec", {"TALLRec": {"auc": 0.54, "rows": 2000}},
                "epoch,train_rows,auc\n1,1000,0.53\n2,2000,0.54\n")
    _run_folder(cpu, "TALLRec", {"TALLRec": {"auc": 0.50, "rows": 2000}})  # --out's own run wins
    _run_folder(cpu, "DIN", {"DIN": {"auc": 0.6995, "rows": 2000}})
    args = quality.parse_args(["--out", str(gpu), "--rows_from", str(cpu), "--work", str(tmp_path / "work")])
    rows = quality.collect(args, ["TALLRec", "DIN", "MF"])
    assert [(r["model"], r["budget"], r["auc"], r["run_in"]) for r in rows] == [
        ("TALLRec", 1000, 0.53, "ml-1m-h200"), ("TALLRec", 2000, 0.54, "ml-1m-h200"),
        ("TALLRec", "last epoch", 0.54, "ml-1m-h200"), ("DIN", "all (early stopping)", 0.6995, "ml-1m")]
    quality.report(args, ["TALLRec", "DIN"])
    table = (gpu / "quality.md").read_text()
    assert "| run in |" in table.splitlines()[0]
    assert "| DIN | all (early stopping) | 0.6995 |" in table and "| ml-1m |" in table
    # a model only in --rows_from is not 'finished' for the runner: it would run in --out
    assert quality.finished(args, "DIN") is None
