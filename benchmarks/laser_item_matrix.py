"""Laser's item matrix: the embedded next-item default under each way of keeping the matrix and the weights together.

    python benchmarks/laser_item_matrix.py                                   # every variant, seed 2020
    python benchmarks/laser_item_matrix.py --variants ours,paper --seeds 2020,2021,2022
    python benchmarks/laser_item_matrix.py --report                          # the table of what has run

Each (variant, seed) is one `python run_recbole_cora.py --model Laser --seed=S <options>` in one shared work folder
(--work), so the BERT4Rec stage of a seed, the dequantised LLM and the token caches are built once. A finished pair
is kept in --out/runs.jsonl and never run again (a killed call goes on where it stopped). The table puts Laser's test
row beside the frozen BERT4Rec's on the same 200 users, with the wall time of the run.

Variants (options over the embedded preset, properties/presets/embedded_next_item.yaml):
    paper      the paper's stage 1 (the default): a cached matrix recomputed when stale, no item gradient, raw cosine
    center     paper + vectors centred on the mean item vector
    refresh4   paper + the whole matrix recomputed every 4 steps
    batch      paper + the batch's target items encoded with gradient (their fresh rows in the logits)
    ours       batch + center
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = {
    "paper": {"item_gradient": "none", "center_vectors": False},
    "center": {"item_gradient": "none", "center_vectors": True},
    "refresh4": {"item_gradient": "none", "center_vectors": False, "item_refresh_steps": 4},
    "batch": {"item_gradient": "batch", "center_vectors": False},
    "ours": {"item_gradient": "batch", "center_vectors": True},
}
METRICS = ("ndcg@10", "recall@10", "mrr@10", "hit@20")


def run_one(variant, seed, work, extra):
    options = {**VARIANTS[variant], "seed": seed}
    args = [f"--{key}={value}" for key, value in options.items()] + list(extra)
    started = time.time()
    log = work / f"{variant}-{seed}.log"
    with open(log, "w") as f:
        code = subprocess.call([sys.executable, str(ROOT / "run_recbole_cora.py"), "--model", "Laser", *args],
                               cwd=work, stdout=f, stderr=subprocess.STDOUT)
    if code:
        raise SystemExit(f"{variant} seed {seed} failed (exit {code}); see {log}")
    folders = sorted((work / "results").glob("Laser-*"), key=lambda p: p.stat().st_mtime)
    results = json.loads((folders[-1] / "results.json").read_text())
    return {"variant": variant, "seed": seed, "seconds": round(time.time() - started), "results_dir": folders[-1].name,
            "options": options, "results": results}


def report(out):
    rows = [json.loads(line) for line in (out / "runs.jsonl").read_text().splitlines() if line.strip()]
    header = ["variant", "seed", "model", *METRICS, "wall"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        for model, result in row["results"].items():
            name = "Laser" if model == "Laser" else "BERT4Rec (frozen)"
            values = [f"{result.get(m, float('nan')):.4f}" for m in METRICS]
            wall = f"{row['seconds'] // 60} min {row['seconds'] % 60:02d} s" if model == "Laser" else ""
            lines.append("| " + " | ".join([row["variant"], str(row["seed"]), name, *values, wall]) + " |")
    table = "\n".join(lines)
    (out / "laser_item_matrix.md").write_text(table + "\n")
    print(table)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--seeds", default="2020")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "quality" / "laser-item-matrix"))
    parser.add_argument("--work", default=None, help="the runs' working folder (default: <out>/work)")
    parser.add_argument("--report", action="store_true", help="only print the table of the finished runs")
    args, extra = parser.parse_known_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if not args.report:
        work = Path(args.work) if args.work else out / "work"
        work.mkdir(parents=True, exist_ok=True)
        done_file = out / "runs.jsonl"
        done = set()
        if done_file.is_file():
            done = {(r["variant"], r["seed"]) for r in map(json.loads, done_file.read_text().splitlines()) if r}
        for seed in [int(s) for s in args.seeds.split(",")]:
            for variant in args.variants.split(","):
                if variant not in VARIANTS:
                    raise SystemExit(f"--variants: unknown {variant!r} (use {', '.join(VARIANTS)})")
                if (variant, seed) in done:
                    continue
                row = run_one(variant, seed, work.resolve(), extra)
                with open(done_file, "a") as f:
                    f.write(json.dumps(row) + "\n")
                print(f"{variant} seed {seed}: Laser NDCG@10 {row['results']['Laser'].get('ndcg@10'):.4f} "
                      f"({row['seconds']} s)", flush=True)
    if (out / "runs.jsonl").is_file():
        report(out)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
