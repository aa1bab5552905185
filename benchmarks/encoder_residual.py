"""The encoder residual (ours) on the embedded presets: Laser (next item, 200 users ranking every item) and RSLLM
(candidate lists of 20, 100 users), each run giving three rows on the same test users: the frozen encoder alone, the
LLM's score alone (Laser's: the paper's score; RSLLM's: its user-item logit with the user token, ours) and the fused
score (``encoder_residual``: encoder + g x LLM, g fitted on valid, 0 unless a likelihood-ratio test says the LLM adds
something there).

    python benchmarks/encoder_residual.py                          # Laser and RSLLM, seeds 2020, 2021, 2022
    python benchmarks/encoder_residual.py --models RSLLM --seeds 2020
    python benchmarks/encoder_residual.py --report                 # the table and the figure of what has run

Each (model, seed) is one ``python run_recbole_cora.py --model M --seed=S --encoder_residual=True <options>`` in one
shared work folder (--work: the dequantised LLM and the token caches are built once, a seed's encoder stage once). A
finished pair is kept in --out/runs.jsonl and never run again (a killed call goes on where it stopped). The LLM side
trains as in the paper whether or not the residual is on (the gate is fitted after training and changes no step), so
the "LLM score alone" row is the model of that seed without the residual. The table also gives each run's valid
cross-entropy with the encoder alone and fused, read from its log, and the likelihood-ratio statistic the gate's test
compares with 3.84. Other ``--key=value`` options go to every run.
"""

import argparse
import json
import os
import re
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from seed_runs import run_model, run_pending  # noqa: E402
MODELS = {
    # the embedded next-item preset as it is
    "Laser": {"encoder_residual": True},
    # the embedded candidate preset; the score the gate fuses is the user-item logit (with the user's SASRec state as
    # the prompt's last token); greedy answers are skipped (they do not depend on the score, and they are its slow half)
    "RSLLM": {"encoder_residual": True, "user_token": True, "candidate_score": "user_item", "generate_answers": False},
}
ENCODER = {"Laser": "BERT4Rec", "RSLLM": "SASRec"}
METRIC = {"Laser": ("ndcg@10", "recall@10"), "RSLLM": ("ndcg@10", "hit@1")}


def run_one(model, seed, work, extra):
    options = {**MODELS[model], "seed": seed}
    seconds, folder, results = run_model(model, options, work / f"{model}-{seed}.log", work, extra)
    return {"model": model, "seed": seed, "seconds": seconds, "results_dir": folder, "options": options,
            "extra": list(extra), "results": results}


def parts(row):
    """(encoder, LLM alone, fused) results of one run."""
    model, results = row["model"], row["results"]
    return (results[f"{ENCODER[model]} (frozen sequential encoder)"], results[f"{model} (LLM score alone)"],
            results[model])


def valid_fit(work, row):
    """(valid users, their cross-entropy with the encoder alone, with g) from the run's log line of the gate's fit,
    and the likelihood-ratio statistic 2 n (alone - fused) the gate's test reads (None where the log is missing)."""
    log = work / f"{row['model']}-{row['seed']}.log"
    if not log.is_file():
        return None
    found = re.search(r"fitted on (\d+) valid users \(their cross-entropy ([\d.]+) with the encoder alone, ([\d.]+) with g",
                      log.read_text(errors="replace"))
    if not found:
        return None
    n, alone, fused = int(found[1]), float(found[2]), float(found[3])
    return n, alone, fused, 2 * n * (alone - fused)


def report(out, work):
    rows = [json.loads(line) for line in (out / "runs.jsonl").read_text().splitlines() if line.strip()]
    lines = ["| model | seed | users | score | NDCG@10 | other | gate g | valid cross-entropy: encoder / fused (LR statistic) | wall |",
             "|---|---|---|---|---|---|---|---|---|"]
    summary = {}
    for row in rows:
        model = row["model"]
        first, second = METRIC[model]
        wall = f"{row['seconds'] // 60} min {row['seconds'] % 60:02d} s"
        fit = valid_fit(work, row)
        for name, result in zip((f"{ENCODER[model]} alone (frozen)", f"{model}: LLM score alone",
                                 f"{model}: fused (encoder_residual)"), parts(row)):
            fused = "residual_gate" in result
            gate = f"{result['residual_gate']:.3f}" if fused else ""
            test = f"{fit[1]:.4f} / {fit[2]:.4f} ({fit[3]:.2f})" if fused and fit else ""
            lines.append(f"| {model} | {row['seed']} | {result.get('users', '')} | {name} | {result[first]:.4f} | "
                         f"{second} {result[second]:.4f} | {gate} | {test} | {wall if fused else ''} |")
            summary.setdefault((model, name), []).append(result[first])
    lines += ["", "| model | score | NDCG@10 mean | spread (min - max) | seeds |", "|---|---|---|---|---|"]
    for (model, name), values in summary.items():
        lines.append(f"| {model} | {name} | {statistics.mean(values):.4f} | {min(values):.4f} - {max(values):.4f} | "
                     f"{len(values)} |")
    table = "\n".join(lines)
    (out / "encoder_residual.md").write_text(table + "\n")
    print(table)
    draw(out, summary)


def draw(out, summary):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = sorted({model for model, _ in summary})
    fig, axes = plt.subplots(1, len(models), figsize=(5 * len(models), 3.6), squeeze=False)
    for ax, model in zip(axes[0], models):
        names = [name for m, name in summary if m == model]
        values = [summary[(model, name)] for name in names]
        ax.bar(range(len(names)), [statistics.mean(v) for v in values], color=["#999999", "#6a8fd0", "#d07a3a"][: len(names)])
        for k, v in enumerate(values):
            ax.scatter([k] * len(v), v, color="black", s=12, zorder=3)
        ax.set_xticks(range(len(names)), [n.split(": ")[-1].replace(" (", "\n(") for n in names], fontsize=8)
        ax.set_ylabel("test NDCG@10")
        ax.set_title(f"{model} (embedded preset; dots: seeds)")
    fig.tight_layout()
    fig.savefig(out / "encoder_residual.png", dpi=120)


def announce(row):
    encoder, alone, fused = parts(row)
    return (f"{row['model']} seed {row['seed']}: NDCG@10 encoder {encoder['ndcg@10']:.4f}, LLM alone "
            f"{alone['ndcg@10']:.4f}, fused {fused['ndcg@10']:.4f} (g {fused['residual_gate']:.3f}; {row['seconds']} s)")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="Laser,RSLLM")
    parser.add_argument("--seeds", default="2020,2021,2022")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "quality" / "encoder-residual"))
    parser.add_argument("--work", default=None, help="the runs' working folder (default: <out>/work)")
    parser.add_argument("--report", action="store_true", help="only print the table of the finished runs")
    args, extra = parser.parse_known_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if not args.report:
        work = (Path(args.work) if args.work else out / "work").resolve()
        work.mkdir(parents=True, exist_ok=True)
        unknown = set(args.models.split(",")) - set(MODELS)
        if unknown:
            raise SystemExit(f"--models: unknown {sorted(unknown)} (use {', '.join(MODELS)})")
        pairs = [(model, int(seed)) for seed in args.seeds.split(",") for model in args.models.split(",")]
        run_pending(out, pairs, lambda model, seed: run_one(model, seed, work, extra),
                    key=lambda row: (row["model"], row["seed"]), announce=announce)
    if (out / "runs.jsonl").is_file():
        report(out, Path(args.work) if args.work else out / "work")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
