"""RecBole's baselines tuned on ML-1M under CoLLM's protocol, beside the same models at RecBole's defaults and the
CoRA paper's rows for them: how much of each gap to the paper tuning closes.

    python benchmarks/tune_baselines.py                           # MF, LightGCN: 16 trials each
    python benchmarks/tune_baselines.py --models SASRec --trials 4
    python benchmarks/tune_baselines.py --report                  # only rebuild tuned.md / tuned.csv

Each model runs exactly as ``benchmarks/quality.py`` runs it (same dataset, split, the same fixed 2,000 valid and
test rows), tuned with ``--params_file properties/hyper/<Model>.test`` (its whole grid where that is smaller than
``--trials``, else that many random draws of it), chosen on valid AUC; only the chosen trial's test result is
reported. Resumable: run the same command again (each model's Optuna study is kept in its tuning folder). The
defaults' rows are read from ``benchmarks/quality/ml-1m`` (``quality.py``'s own runs).
"""

import argparse
import csv
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import quality  # noqa: E402  (the same options as quality.py's runs)

MODELS = {"MF": "BPR", "LightGCN": "LightGCN", "SASRec": "SASRec"}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="MF,LightGCN", help=f"comma-separated, of {', '.join(MODELS)}")
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--defaults", default=str(ROOT / "benchmarks" / "quality" / "ml-1m"),
                        help="quality.py's --out folder whose runs are the defaults' rows")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "quality" / "ml-1m-tuned"))
    parser.add_argument("--report", action="store_true")
    args, rest = parser.parse_known_args(argv)
    args.quality = quality.parse_args(["--out", args.out] + rest)
    return args


def options(args, name):
    """``quality.py``'s command line for ``name`` (the model's own run, nothing changed), as ``--key=value``
    arguments, without its results folder (each trial has its own)."""
    cmd = quality.command(args.quality, name)
    return [arg for arg in cmd[2:] if not arg.startswith("--results_dir=")]


def tune_one(args, name):
    from recbole_cora.compare import default_params_file
    from recbole_cora.tuning import budget_search, read_params_file, tune

    space = default_params_file(MODELS[name])
    trials, algo = budget_search(read_params_file(space), args.trials)
    start = time.time()
    out = tune(space, cmd_args=options(args, name), folder=Path(args.out) / name, trials=trials, algo=algo)
    print(f"tune_baselines: {name}: {out['finished']} trials in {time.time() - start:.0f} s", flush=True)


def default_row(args, name):
    folder = quality.finished(argparse.Namespace(out=args.defaults, rows_from=[]), name)
    if folder is None:
        return None
    results = json.loads((folder / "results.json").read_text())
    return results.get(MODELS[name]) or next(iter(results.values()))


def report(args):
    rows = []
    for name in MODELS:
        folder = Path(args.out) / name
        if not (folder / "trials.csv").is_file():
            continue
        with open(folder / "trials.csv") as f:
            trials = list(csv.DictReader(f))
        chosen = next(t for t in trials if t["chosen"] == "True")
        best_dir = next((folder / "trials").glob(f"trial-{chosen['trial']}/*/results.json"))
        tuned = json.loads(best_dir.read_text())
        tuned = tuned.get(MODELS[name]) or next(iter(tuned.values()))
        default = default_row(args, name) or {}
        paper = quality.PAPER.get(name, (None, None))
        values = {k: v for k, v in chosen.items() if k not in ("trial", "state", "seconds", "chosen", "note")
                  and not k.startswith("valid")}
        seconds = sum(float(t["seconds"] or 0) for t in trials)
        row = {"model": name, "trials": len(trials), "chosen": json.dumps(values), "tuning s": round(seconds),
               "default auc": default.get("auc"), "default uauc": default.get("uauc"),
               "tuned auc": tuned.get("auc"), "tuned uauc": tuned.get("uauc"),
               "paper auc": paper[0], "paper uauc": paper[1]}
        if None not in (row["default auc"], row["tuned auc"], row["paper auc"]):
            gap = row["paper auc"] - row["default auc"]
            row["auc gap closed"] = f"{(row['tuned auc'] - row['default auc']) / gap:.0%}" if gap > 0 else "none to close"
        rows.append(row)
    if not rows:
        print("tune_baselines: nothing tuned yet")
        return
    fields = list(dict.fromkeys(k for row in rows for k in row))
    with open(Path(args.out) / "tuned.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    fmt = lambda v: f"{v:.4f}" if isinstance(v, float) else ("" if v is None else str(v))  # noqa: E731
    lines = ["| " + " | ".join(fields) + " |", "|" + "---|" * len(fields)]
    lines += ["| " + " | ".join(fmt(row.get(k)) for k in fields) + " |" for row in rows]
    text = "\n".join(lines)
    (Path(args.out) / "tuned.md").write_text(text + "\n")
    print(text)


def main(argv=None):
    args = parse_args(argv)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    if not args.report:
        for name in [m.strip() for m in args.models.split(",") if m.strip()]:
            tune_one(args, name)
    report(args)


if __name__ == "__main__":
    main()
