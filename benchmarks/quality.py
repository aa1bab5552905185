"""Learning curves of the LLM models on a real LLM, next to RecBole's baselines on the same split and rows, for each
task: labeled (AUC), next_item (Recall@10, NDCG@10 over all items) and candidates (NDCG@10, Hit@1 over the lists).

    python benchmarks/quality.py                              # ML-1M (CoLLM's protocol), SmolLM2-135M: everything
    python benchmarks/quality.py --models ZeroShot,CoRA-LightGCN --curve 1,4
    python benchmarks/quality.py --task next_item --dataset ml-100k --eval_rows 1000 --out benchmarks/quality/ml-100k-next-item
    python benchmarks/quality.py --task candidates --dataset ml-100k --eval_rows 1000 --out benchmarks/quality/ml-100k-candidates
    python benchmarks/quality.py --report                     # only rebuild the tables and the plot
    python benchmarks/quality.py --report --out DIR --rows_from benchmarks/quality/ml-1m   # baselines of another run
    python benchmarks/quality.py --answer_score=yes_logit     # other --key=value: options of every trained LLM model

Every model runs as ``run_recbole_cora.py`` (one process each, one after the other) with the same dataset, split,
LLM and ``eval_rows`` (a fixed sample of valid and test rows, the same for every model). An LLM model trains
``--rows_per_epoch`` sampled rows per epoch for ``max(--curve)`` epochs and is scored on the test rows after each
epoch of ``--curve`` (``curve_epochs``: points along one run). Nothing is chosen on valid (``eval_step`` 0: no valid
pass; the test result is the last curve point, not scored again), so every point costs one pass over the test rows.
RecBole's baselines train as RecBole trains them (early stopping on valid AUC) and are one point each.

Resumable: run the same command again. A finished model is not run again; an unfinished LLM run goes on from its
last resume state (``--resume``), so a budget that does not fit one sitting is continued, not restarted. Small
outputs (each run's results, curve.csv, ``quality.md``, ``quality.csv``, ``quality.png``) go into ``--out``; the
heavy ones (checkpoints, the dequantised LLM, CF stages, logs) into ``--work``.
"""

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# name -> (model, options): the rows of the study
VARIANTS = {
    "ZeroShot": ("ZeroShot", {}),
    "CoRA-LightGCN": ("CoRA", {"cf_model": "LightGCN"}),
    "CoRA-MF": ("CoRA", {"cf_model": "BPR"}),
    "TALLRec": ("TALLRec", {}),
    "CoLLM-LightGCN": ("CoLLM", {"cf_model": "LightGCN"}),
    "RecLoRA": ("RecLoRA", {}),
    "MF": ("BPR", {}),
    "LightGCN": ("LightGCN", {}),
    "DIN": ("DIN", {}),
    "SASRec": ("SASRec", {"task": "labeled"}),  # the next positive after the history of positives, scored per row
}
# The ranking tasks' rows: name -> (model, options). Laser and RSLLM keep the encoder residual (the default), so their
# curve points are the LLM's own score (what training moves: the gate is fitted after it) and their final row the
# fused score.
RANKING_VARIANTS = {
    "next_item": {
        "Laser": ("Laser", {}),
        "SASRec": ("SASRec", {}),
        "BERT4Rec": ("BERT4Rec", {}),
        "GRU4Rec": ("GRU4Rec", {}),
    },
    "candidates": {
        "RSLLM": ("RSLLM", {"generate_answers": False}),  # greedy answers: the slow half, and not what the curve reads
        "Laser": ("Laser", {}),
        "TALLRec": ("TALLRec", {}),
        "CoRA-LightGCN": ("CoRA", {"cf_model": "LightGCN"}),
        "SASRec": ("SASRec", {}),
        "BERT4Rec": ("BERT4Rec", {}),
    },
}
ALL_VARIANTS = {"labeled": VARIANTS, **RANKING_VARIANTS}
LLM_MODELS = {"ZeroShot", "CoRA", "TALLRec", "CoLLM", "RecLoRA", "Laser", "RSLLM"}
MULTI_STAGE = {"CoLLM", "Laser", "RSLLM"}  # two training stages that share the budget: half the epochs each
# The paper's figures (CoRA, Liu et al. 2024, Table 2: Vicuna-7B, ML-1M, AUC / UAUC)
PAPER = {
    "MF": (0.6486, 0.6396), "LightGCN": (0.5858, 0.6512), "SASRec": (0.7005, 0.6734), "ZeroShot": (0.5119, 0.5178),
    "TALLRec": (0.7044, 0.6741), "CoLLM-LightGCN": (0.7164, 0.6842), "CoRA-MF": (0.7361, 0.6884),
    "CoRA-LightGCN": (0.7128, 0.6966),
}
METRICS = ("auc", "uauc", "warm_auc", "warm_uauc", "cold_auc", "cold_uauc")
# task -> (the table's metric columns (key, title), the metrics plotted, the count of test rows or users)
TASK_COLUMNS = {
    "labeled": (tuple(zip(METRICS, ("AUC", "UAUC", "warm AUC", "warm UAUC", "cold AUC", "cold UAUC"))),
                (("auc", "all test rows"), ("warm_auc", "warm"), ("cold_auc", "cold")), ("rows", "test rows")),
    "next_item": ((("recall@10", "Recall@10"), ("ndcg@10", "NDCG@10"), ("recall@20", "Recall@20"), ("ndcg@20", "NDCG@20")),
                  (("recall@10", "Recall@10"), ("ndcg@10", "NDCG@10")), ("users", "test users")),
    "candidates": ((("ndcg@10", "NDCG@10"), ("hit@1", "Hit@1"), ("hit@5", "Hit@5"), ("ndcg@5", "NDCG@5")),
                   (("ndcg@10", "NDCG@10"), ("hit@1", "Hit@1")), ("users", "test users")),
}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="labeled", choices=sorted(ALL_VARIANTS))
    parser.add_argument("--models", default=None, help="comma-separated rows of the task's study (default: all of them: "
                        + "; ".join(f"{task}: {', '.join(v)}" for task, v in ALL_VARIANTS.items()) + ")")
    parser.add_argument("--dataset", default="ml-1m")
    parser.add_argument("--data_path", default=str(ROOT.parent / "shared" / "datasets"))
    parser.add_argument("--llm_path", default="smollm2-135m-instruct")
    parser.add_argument("--eval_rows", type=int, default=2000, help="the fixed valid and test rows of every model")
    parser.add_argument("--rows_per_epoch", type=int, default=1000)
    parser.add_argument("--curve", default="1,4,16", help="epochs after which the test rows are scored")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "quality" / "ml-1m"))
    parser.add_argument("--work", default=str(Path.home() / ".cache" / "recbole-cora-quality"))
    parser.add_argument("--report", action="store_true", help="only rebuild quality.md / .csv / .png")
    parser.add_argument("--rows_from", action="append", default=[], metavar="DIR",
                        help="another --out folder: the report takes a model that has no run in --out from there "
                             "(RecBole's baselines run on another machine, say); the table names each row's folder")
    args, args.set = parser.parse_known_args(argv)  # any other --key=value goes to every trained LLM model
    args.variants = ALL_VARIANTS[args.task]
    args.models = args.models or ",".join(args.variants)
    return args


def command(args, name):
    model, options = args.variants[name]
    curve = [int(c) for c in args.curve.split(",")]
    out, work = Path(args.out).resolve(), Path(args.work).resolve()
    options = {
        "task": args.task, **options, "dataset": args.dataset, "eval_rows": args.eval_rows,
        "checkpoint_dir": str(work / "saved" / name), "results_dir": str(out / "runs" / name),
        "cf_checkpoint_dir": str(work / "saved" / "stages"), "show_progress": True,
    }
    if (Path(args.data_path) / args.dataset).is_dir():  # else RecBole's own copy (ml-100k ships in its wheel)
        options["data_path"] = args.data_path
    if model in LLM_MODELS:
        options.update({"llm_path": args.llm_path, "llm_cache_dir": str(work / "llm_cache"),
                        "token_cache_dir": str(work / "token_cache")})
        if model != "ZeroShot":
            epochs = max(curve)
            options.update({"train_rows_per_epoch": args.rows_per_epoch, "curve_epochs": json.dumps(curve),
                            "eval_step": 0, "zero_shot_row": False})
            if model in MULTI_STAGE:  # its two steps share the budget: half the epochs each
                options.update({"stage1_epochs": max(1, epochs // 2), "stage2_epochs": max(1, epochs // 2),
                                "curve_epochs": json.dumps([max(1, c // 2) for c in curve])})
            else:
                options["epochs"] = epochs
    cmd = [sys.executable, str(ROOT / "run_recbole_cora.py"), f"--model={model}"]
    cmd += [f"--{k}={v}" for k, v in options.items() if k != "dataset"] + [f"--dataset={args.dataset}"]
    if model in LLM_MODELS and model != "ZeroShot":
        cmd += list(args.set)
        if list(Path(options["checkpoint_dir"]).glob("*.resume/LATEST")):
            cmd.append("--resume")
    return cmd


def child_env(environ=None):
    """The environment of a model's process: this checkout first on ``PYTHONPATH``, the caller's entries kept
    after it (packages installed with ``pip install --target`` stay importable)."""
    environ = dict(os.environ if environ is None else environ)
    environ["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in environ.get("PYTHONPATH", "").split(os.pathsep) if p])
    return environ


def finished(args, name, elsewhere=False):
    """The folder of ``name``'s last finished run in ``--out`` (or, with ``elsewhere``, in the first ``--rows_from``
    folder that has one)."""
    for out in [args.out] + (list(args.rows_from) if elsewhere else []):
        runs = sorted((Path(out) / "runs" / name).glob("*/results.json"))
        if runs:
            return runs[-1].parent
    return None


def run(args, name):
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    cmd = command(args, name)
    log = Path(args.out) / "logs" / f"{name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    print(f"quality: {name}: {' '.join(cmd[1:])}", flush=True)
    start = time.time()
    with open(log, "a") as f:
        f.write(f"\n# {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(cmd)}\n")
        f.flush()
        code = subprocess.call(cmd, cwd=work, stdout=f, stderr=subprocess.STDOUT, env=child_env())
    print(f"quality: {name}: exit {code} after {time.time() - start:.0f} s (log: {log})", flush=True)


def collect(args, names):
    """One row per (model, budget): the curve points of the LLM models, the final result of the others."""
    rows = []
    for name in names:
        folder = finished(args, name, elsewhere=True)
        model = args.variants[name][0]
        where = folder.parents[2].name if folder is not None else Path(args.out).name
        if folder is None:
            points = sorted(Path(args.work, "saved", name).glob("*.curve.jsonl"))  # an unfinished run's curve so far
            curve = [json.loads(x) for p in points for x in p.read_text().splitlines() if x.strip()]
            for point in curve:
                rows.append({"model": name, "budget": point["train_rows"], "status": "running", "run_in": where,
                             **point})
            continue
        results = json.loads((folder / "results.json").read_text())
        result = results[model if model in results else next(iter(results))]
        curve_file = folder / "curve.csv"
        if curve_file.is_file():
            with open(curve_file) as f:
                points = list(csv.DictReader(f))
            offset = 0
            for point in points:
                if model in MULTI_STAGE and point.get("stage") == "2":  # step 2's rows come after step 1's
                    offset = max(int(p["train_rows"]) for p in points if p.get("stage") == "1")
                rows.append({"model": name, **{k: _number(v) for k, v in point.items()},
                             "budget": int(point["train_rows"]) + offset, "status": "curve", "run_in": where})
        budget = "all (early stopping)" if model not in LLM_MODELS else ("0" if model == "ZeroShot" else "last epoch")
        rows.append({"model": name, "budget": budget, "status": "final", "run_in": where, **result})
    return rows


def _number(value):
    try:
        return float(value)
    except (TypeError, ValueError):
        return value


def report(args, names):
    rows = collect(args, names)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    columns, _, (count, count_title) = TASK_COLUMNS[args.task]
    header = ["model", "training rows", *(title for _, title in columns), count_title, "train s (epoch)", "run in"]
    header += ["paper AUC / UAUC"] if args.task == "labeled" else []
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        paper = PAPER.get(row["model"]) if args.task == "labeled" else None
        cells = [row["model"], str(row["budget"]) + (" (running)" if row["status"] == "running" else "")]
        if row.get("score"):  # an encoder-residual model's curve point: its LLM's score alone
            cells[1] += f" ({row['score']})"
        cells += [_fmt(row.get(m)) for m, _ in columns] + [_fmt(row.get(count), 0)]
        cells += [_fmt(row.get("epoch_train_seconds", row.get("train_seconds")), 0)]
        cells += [row["run_in"]]
        if args.task == "labeled":
            cells += [f"{paper[0]:.4f} / {paper[1]:.4f}" if paper and row["status"] == "final" else ""]
        lines.append("| " + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n"
    (out / "quality.md").write_text(text)
    with open(out / "quality.csv", "w", newline="") as f:
        fields = ["model", "budget", "status", "score"] + [m for m, _ in columns] + [count, "epoch_train_seconds",
                                                                                   "train_seconds", "run_in"]
        writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    plot(rows, out / "quality.png", TASK_COLUMNS[args.task][1])
    print(text)


def colour_map(names):
    """A colour per model, none shared: the frozen LLM in tab10's grey, the others in tab10's nine other colours,
    then tab20's lighter shades of the same hues (matplotlib's qualitative maps; the eighteenth model on cycles)."""
    from matplotlib import colormaps
    from matplotlib.colors import to_hex

    grey, light_grey = to_hex(colormaps["tab10"].colors[7]), to_hex(colormaps["tab20"].colors[15])
    palette = [to_hex(c) for c in colormaps["tab10"].colors + colormaps["tab20"].colors[1::2]]
    palette = [c for c in palette if c not in (grey, light_grey)]
    others = [n for n in names if n != "ZeroShot"]
    colours = {name: palette[k % len(palette)] for k, name in enumerate(others)}
    if "ZeroShot" in names:
        colours["ZeroShot"] = grey
    return colours


def plot(rows, path, panels=TASK_COLUMNS["labeled"][1]):
    try:
        import matplotlib
    except ImportError:
        return
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4.2), sharey=True)
    for ax, (metric, title) in zip(axes, panels):
        names = list(dict.fromkeys(r["model"] for r in rows))
        colours = colour_map(names)
        for name in names:
            colour = colours[name]
            points = [r for r in rows if r["model"] == name and isinstance(r["budget"], (int, float))]
            flat = [r for r in rows if r["model"] == name and r["status"] == "final" and not points]
            if points:
                ax.plot([r["budget"] for r in points], [r.get(metric) for r in points], marker="o", label=name,
                        color=colour)
            elif flat and flat[0].get(metric) is not None:
                ax.axhline(flat[0][metric], linestyle="--", linewidth=1, label=f"{name} (final)", color=colour)
        ax.set(xscale="log", xlabel="training rows seen", title=f"test AUC, {title}" if metric.endswith("auc") else
               f"test {title}")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("AUC" if panels[0][0].endswith("auc") else "metric over the test users")
    axes[-1].legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def _fmt(value, digits=4):
    if value is None or value == "":
        return ""
    try:
        value = float(value)
    except (TypeError, ValueError):
        return str(value)
    if value != value:
        return "nan"
    return f"{value:,.0f}" if digits == 0 else f"{value:.{digits}f}"


def main(argv=None):
    args = parse_args(argv)
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    unknown = [n for n in names if n not in args.variants]
    if unknown:
        raise SystemExit(f"unknown --models {unknown} for --task {args.task}: choose from {', '.join(args.variants)}")
    if not args.report:
        for name in names:
            if finished(args, name):
                print(f"quality: {name}: finished in {finished(args, name)}, not run again")
                continue
            run(args, name)
            report(args, names)
    report(args, names)


if __name__ == "__main__":
    main()
