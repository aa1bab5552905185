"""The resumable loop the seed benchmarks share (``laser_item_matrix.py``, ``encoder_residual.py``): one
``python run_recbole_cora.py --model M <options>`` per (variant, seed) in one shared work folder, its results read
back from the run's folder, each finished pair appended to ``<out>/runs.jsonl`` and never run again."""

import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_model(model, options, log, work, extra=()):
    """One run of ``model`` with ``options`` (a dict) and ``extra`` (``--key=value`` strings) in ``work``, its output
    in ``log``: (seconds, results folder name, results dict)."""
    args = [f"--{key}={value}" for key, value in options.items()] + list(extra)
    started = time.time()
    with open(log, "w") as f:
        code = subprocess.call([sys.executable, str(ROOT / "run_recbole_cora.py"), "--model", model, *args],
                               cwd=work, stdout=f, stderr=subprocess.STDOUT)
    if code:
        raise SystemExit(f"{model} {options} failed (exit {code}); see {log}")
    folders = sorted((work / "results").glob(f"{model}-*"), key=lambda p: p.stat().st_mtime)
    return round(time.time() - started), folders[-1].name, json.loads((folders[-1] / "results.json").read_text())


def run_pending(out, pairs, run, key, announce):
    """Run each (name, seed) of ``pairs`` not yet in ``<out>/runs.jsonl`` (``key(row)`` gives a finished row's pair)
    with ``run(name, seed)``, appending its row and printing ``announce(row)``."""
    done_file = Path(out) / "runs.jsonl"
    done = set()
    if done_file.is_file():
        done = {key(row) for row in map(json.loads, done_file.read_text().splitlines()) if row}
    for pair in pairs:
        if pair in done:
            continue
        row = run(*pair)
        with open(done_file, "a") as f:
            f.write(json.dumps(row) + "\n")
        print(announce(row), flush=True)
