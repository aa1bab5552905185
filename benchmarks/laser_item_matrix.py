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
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from seed_runs import run_model, run_pending  # noqa: E402
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
    seconds, folder, results = run_model("Laser", options, work / f"{variant}-{seed}.log", work, extra)
    return {"variant": variant, "seed": seed, "seconds": seconds, "results_dir": folder, "options": options,
            "results": results}


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
        work = (Path(args.work) if args.work else out / "work").resolve()
        work.mkdir(parents=True, exist_ok=True)
        unknown = set(args.variants.split(",")) - set(VARIANTS)
        if unknown:
            raise SystemExit(f"--variants: unknown {sorted(unknown)} (use {', '.join(VARIANTS)})")
        pairs = [(variant, int(seed)) for seed in args.seeds.split(",") for variant in args.variants.split(",")]
        run_pending(out, pairs, lambda variant, seed: run_one(variant, seed, work, extra),
                    key=lambda row: (row["variant"], row["seed"]),
                    announce=lambda row: (f"{row['variant']} seed {row['seed']}: Laser NDCG@10 "
                                          f"{row['results']['Laser'].get('ndcg@10'):.4f} ({row['seconds']} s)"))
    if (out / "runs.jsonl").is_file():
        report(out)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
