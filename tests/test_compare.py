import csv
import json
import subprocess
import sys
from pathlib import Path

from conftest import ROOT, SMALL_CORA


def test_compare_runs_every_model_on_one_split_resumes_and_keeps_going_after_a_failure(tmp_path, tiny_llm):
    small = {k: v for k, v in SMALL_CORA.items() if k not in ("state", "show_progress")}
    options = [f"--{k}={v!r}" if not isinstance(v, (int, float)) else f"--{k}={v}" for k, v in small.items()]
    common = [sys.executable, str(ROOT / "run_recbole_cora.py"), "--dataset", "ml-100k", f"--llm_path={tiny_llm}",
              "--train_rows_per_epoch=32", "--eval_rows=300", "--state=WARNING", *options]
    folder = tmp_path / "cmp"
    done = subprocess.run([*common, "--compare", "BPR,MF,TALLRec,NoSuchModel,CoRA", "--compare_dir", str(folder)],
                          capture_output=True, text=True, cwd=tmp_path, timeout=900)
    assert done.returncode == 1, done.stderr[-3000:]  # one model failed ...
    rows = list(csv.DictReader(open(folder / "comparison.csv")))
    assert [r["model"] for r in rows if r["group"] == "all" and "run)" not in r["model"]] == ["BPR", "MF", "TALLRec", "CoRA"]
    # ... the others ran; beside an LLM model, the rows its run printed: the zero-shot row once (TALLRec's and CoRA's
    # prompts are the same), CoRA's frozen LightGCN after CoRA
    side = [r["model"] for r in rows if r["group"] == "all" and "run)" in r["model"]]
    assert side == ["ZeroShot (frozen LLM, in TALLRec's run)", "LightGCN (frozen CF encoder, in CoRA's run)"], side
    cora_run = json.loads((folder / "runs" / "CoRA" / "result.json").read_text())["results_dir"]
    lightgcn = json.loads((Path(cora_run) / "results.json").read_text())["LightGCN (frozen CF encoder)"]
    row = [r for r in rows if r["model"] == side[1] and r["group"] == "warm"][0]
    assert row["auc"] == str(lightgcn["warm_auc"]) and int(row["n"]) == lightgcn["warm_rows"]
    assert [r for r in rows if r["model"] == "NoSuchModel"][0]["group"] == "error"
    assert "unknown model 'NoSuchModel'" in (folder / "comparison.md").read_text()
    assert (folder / "comparison.png").stat().st_size > 10_000
    for name in ("BPR", "TALLRec", "CoRA"):  # the table holds exactly what each run saved and printed
        run = json.loads((folder / "runs" / name / "result.json").read_text())
        own = json.loads(next(Path(run["results_dir"]).glob("results.json")).read_text())[name]
        for group in ("all", "warm", "cold"):
            row = [r for r in rows if r["model"] == name and r["group"] == group][0]
            prefix = "" if group == "all" else f"{group}_"
            assert int(row["n"]) == own[f"{prefix}rows" if group != "all" else "rows"]
            for metric in ("auc", "uauc", "logloss"):
                assert row[metric] == str(own[prefix + metric]), (name, group, metric)
        assert (Path(run["results_dir"]) / "config.json").is_file()
        assert run["rows"] == 300  # every model on the same 300 test rows
    bpr = [r for r in rows if r["model"] == "BPR" and r["group"] == "all"][0]
    mf = [r for r in rows if r["model"] == "MF" and r["group"] == "all"][0]
    assert bpr["auc"] == mf["auc"]  # MF is RecBole's BPR
    assert int(bpr["trainable_parameters"]) > 0 and float(bpr["train_seconds"]) > 0
    # resume: finished models are not run again
    stamps = {n: (folder / "runs" / n / "result.json").stat().st_mtime_ns for n in ("BPR", "TALLRec", "CoRA")}
    again = subprocess.run([*common, "--compare", "BPR,TALLRec,CoRA", "--compare_dir", str(folder)],
                           capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert stamps == {n: (folder / "runs" / n / "result.json").stat().st_mtime_ns for n in stamps}
    assert "| CoRA | all | 300 |" in again.stdout
