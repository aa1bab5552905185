"""Scoring pairs with a saved run (``recbole_cora.load_run``) against the run's own evaluation speed.

    python benchmarks/bench_predict.py results/CoRA-ml-100k-<time>            # 200 test pairs, at their latest history
    python benchmarks/bench_predict.py results/CoRA-ml-100k-<time> --pairs 500 --recommend 2

Prints one table: the seconds to load the run, pairs per second of ``predict_pairs`` (the pairs are the run's own
test pairs, drawn with a seed, scored after the user's last interaction), the run's own test evaluation in rows
per second (its ``results.json``: ``eval_seconds`` over ``rows``), and, with ``--recommend``, the seconds per user
of ``recommend`` (its ``--candidates`` re-ranked).
"""

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", help="a run's results folder (it holds run.json and results.json)")
    parser.add_argument("--pairs", type=int, default=200)
    parser.add_argument("--recommend", type=int, default=0, help="also time recommend() for this many users")
    parser.add_argument("--candidates", type=int, default=50)
    args = parser.parse_args(argv)

    from recbole_cora import load_run

    start = time.time()
    run = load_run(args.results)
    load_seconds = time.time() - start
    feat = run.test_data._dataset.inter_feat
    generator = torch.Generator().manual_seed(0)
    rows = torch.randperm(len(feat), generator=generator)[: args.pairs].tolist()
    tokens = run.dataset.field2id_token
    users = [str(tokens[run.dataset.uid_field][feat[run.dataset.uid_field][k]]) for k in rows]
    items = [str(tokens[run.dataset.iid_field][feat[run.dataset.iid_field][k]]) for k in rows]
    start = time.time()
    scored = run.predict_pairs(users, items, show_progress=True)
    predict_seconds = time.time() - start
    result = json.loads(Path(args.results, "results.json").read_text())[run.config["model"]]
    eval_rate = result["rows"] / result["eval_seconds"] if result.get("eval_seconds") else float("nan")
    lines = ["| measure | value |", "|---|---|",
             f"| load the run (s) | {load_seconds:.1f} |",
             f"| predict_pairs: {len(rows)} pairs (s) | {predict_seconds:.1f} |",
             f"| predict_pairs: pairs per second | {len(rows) / predict_seconds:.2f} |",
             f"| the run's own test evaluation: rows per second | {eval_rate:.2f} ({result['rows']} rows in {result['eval_seconds']:.0f} s) |",
             f"| cold pairs among them | {int((~scored['warm']).sum())} |"]
    if args.recommend:
        user_ids = sorted(run.positives(), key=lambda u: -len(run.positives()[u]))[: args.recommend]
        chosen = [str(tokens[run.dataset.uid_field][u]) for u in user_ids]
        start = time.time()
        run.recommend(chosen, k=10, candidates=args.candidates)
        lines.append(f"| recommend: seconds per user ({args.candidates} candidates) | {(time.time() - start) / len(chosen):.1f} |")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
