"""RSLLM's loss terms, one at a time, on the embedded candidate default (ml-100k, SmolLM2-135M, 20 candidates).

    python benchmarks/ablation_rsllm.py [--work DIR] [--eval_rows 50] [--key=value ...]

Four runs of `properties/presets/embedded_candidates.yaml`, the same SASRec stage, lists and test users: the LM loss
alone, LM + the user-item InfoNCE, LM + the ID-text InfoNCE, and all three (the default weights, 0.1 each). Each run
is a separate `run_recbole_cora` call; a finished one is found in `--work` and not run again (the script resumes).
Other `--key=value` options go to every run (a larger budget: `--train_rows_per_epoch=512 --stage2_epochs=4`); runs
with other options are kept apart in `--work`.
Writes `benchmarks/rsllm_ablation/ablation.md` and `.csv`: the test metrics, training loss and wall time of each.
"""

import argparse
import csv
import hashlib
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

VARIANTS = {  # name -> (user_item_weight, id_text_weight)
    "LM only": (0.0, 0.0),
    "LM + user-item": (0.1, 0.0),
    "LM + ID-text": (0.0, 0.1),
    "LM + both (default)": (0.1, 0.1),
}
METRICS = ("hit@1", "hit@5", "ndcg@5", "ndcg@10", "valid_ratio", "hit_ratio@1_valid", "hit_ratio@1_all")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", default=str(Path.home() / ".cache" / "recbole-cora-ablation"))
    parser.add_argument("--eval_rows", type=int, default=50)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "rsllm_ablation"))
    args, options = parser.parse_known_args()
    tag = "" if not options else "-" + hashlib.sha256(" ".join(options).encode()).hexdigest()[:8]
    work, out = Path(args.work), Path(args.out)
    work.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    os.chdir(work)  # stages, caches and logs live in the work folder (found again by the next variant)
    from recbole_cora import run_recbole_cora

    rows = []
    for name, (user_item, id_text) in VARIANTS.items():
        done = work / f"{name.replace(' ', '_').replace('+', 'and')}{tag}.json"
        if not done.is_file():
            start = time.time()
            result = run_recbole_cora(config_file_list=[str(ROOT / "properties" / "presets" / "embedded_candidates.yaml")],
                                      config_dict={"user_item_weight": user_item, "id_text_weight": id_text,
                                                   "eval_rows": args.eval_rows, "show_progress": False},
                                      cmd_args=options)
            record = {"variant": name, "user_item_weight": user_item, "id_text_weight": id_text,
                      "wall_seconds": round(time.time() - start, 1), **result["test_result"]}
            done.write_text(json.dumps(record, default=float))
        record = json.loads(done.read_text())
        rows.append(record)
        print(f"{name}: " + ", ".join(f"{m} {record.get(m, float('nan')):.4f}" for m in METRICS), flush=True)
    header = ["variant", "user_item_weight", "id_text_weight", *METRICS, "train_seconds", "wall_seconds"]
    with open(out / "ablation.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=header, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [f"{row.get(k):.4f}" if isinstance(row.get(k), float) and k in METRICS else str(row.get(k)) for k in header]
        lines.append("| " + " | ".join(cells) + " |")
    (out / "ablation.md").write_text(
        f"RSLLM's loss terms on the embedded candidate default, {args.eval_rows} test users "
        f"(`python benchmarks/ablation_rsllm.py --eval_rows {args.eval_rows}{''.join(' ' + o for o in options)}`):\n\n" + "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
