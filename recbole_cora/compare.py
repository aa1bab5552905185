"""One command, every model, one split: ``python run_recbole_cora.py --compare LightGCN,BPR,TALLRec,CoRA``.

Each model runs through ``run_recbole_cora`` with the same configuration files and options (same
dataset, split, LLM, evaluation rows and evaluator). The comparison folder holds:

* ``comparison.md`` / ``comparison.csv``: the task's metrics (labeled: AUC, UAUC, LogLoss for all, warm and cold
  test rows; next-item: Recall, NDCG, MRR, Hit at each k over the test users), trainable parameters, training and
  evaluation time, one line per (model, rows); after an LLM model's lines, those its run printed beside them (its
  frozen encoder's, the frozen LLM's zero-shot row), each named after the run it comes from;
* ``comparison.png``: the same as a chart (needs matplotlib: ``pip install recbole-cora[plot]``);
* ``runs/<model>/``: each run's own result files and resolved ``config.json``, from which the table
  can be made again (``python run_recbole_cora.py --compare ... --compare_dir THAT_FOLDER``).

A model already finished in the folder is not run again (resume); a model that fails leaves an error
line in the table and the others still run.
"""

import csv
import json
import time
import traceback
from logging import getLogger
from pathlib import Path

from tqdm import tqdm

import yaml

from recbole_cora.evaluator import GROUPS
from recbole_cora.results import _fmt, cell, columns, footnote, table_rows
from recbole_cora.tasks import get_task, results_task


def _result_file(folder, name):
    return Path(folder) / "runs" / name / "result.json"


def run_comparison(models, folder, config_file_list=None, config_dict=None, cmd_args=None, tune_budget=None,
                   params_file=None):
    """Run ``models`` (names) into ``folder``; returns ``{name: result or {"error": ...}}``. With ``tune_budget``
    each model is first tuned on valid with that many trials (``tune_for_comparison``: its own search space
    from ``properties/hyper/``, or ``params_file`` for every model) and its row is the chosen trial's test result."""
    from recbole_cora.config import model_tasks, parse_cmd_args
    from recbole_cora.quick_start import run_recbole_cora
    from recbole_cora.utils import get_model

    given = dict(config_dict or {})
    for path in config_file_list or []:
        given = {**(yaml.safe_load(Path(path).read_text()) or {}), **given}
    given.update(parse_cmd_args(cmd_args))
    if not given.get("task") and models:  # one task for every model: the first model's own
        config_dict = {**(config_dict or {}), "task": model_tasks(get_model(models[0]))[0]}
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    logger = getLogger()
    results = {}
    progress = tqdm(models, desc="compare", ncols=100)
    for name in progress:
        progress.set_postfix_str(name)
        path = _result_file(folder, name)
        if path.is_file():
            results[name] = json.loads(path.read_text())
            logger.info(f"compare: {name} already finished in {path.parent}, not run again")
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        options = dict(config_dict or {})
        options.update({"model": name, "results_dir": str(path.parent)})
        start = time.time()
        try:
            if tune_budget:
                result = tune_for_comparison(name, tune_budget, path.parent / "tune", config_file_list,
                                             {k: v for k, v in options.items() if k != "results_dir"}, cmd_args,
                                             params_file)
            else:
                out = run_recbole_cora(config_file_list=config_file_list, config_dict=options, cmd_args=cmd_args)
                result = dict(out["test_result"])
                result["results_dir"] = out["results_dir"]
                result["run_model"] = next(k for k, v in out["results"].items() if v is out["test_result"])
            path.write_text(json.dumps(result, indent=2, default=float))
        except Exception as err:  # one failing model must not lose the others' results
            result = {"error": f"{type(err).__name__}: {err}"}
            (path.parent / "error.txt").write_text(traceback.format_exc())
            logger.error(f"compare: {name} failed after {time.time() - start:.0f}s: {result['error']}")
        results[name] = result
        write_comparison(folder, results)
    return results


def default_params_file(model_name):
    """The search space ``--compare --tune_budget`` gives a model: ``properties/hyper/<Model>.test`` where the
    package ships one, else ``llm.test`` (an LLM model of this package) or ``recbole.test``."""
    from recbole_cora.config import PROPERTIES_DIR
    from recbole_cora.model.abstract_llm_recommender import LLMRecommender
    from recbole_cora.utils import get_model

    model_class = get_model(model_name)
    folder = PROPERTIES_DIR / "hyper"
    for name in (model_name, model_class.__name__):
        if (folder / f"{name}.test").is_file():
            return folder / f"{name}.test"
    return folder / ("llm.test" if issubclass(model_class, LLMRecommender) else "recbole.test")


def tune_for_comparison(name, budget, folder, config_file_list, config_dict, cmd_args, params_file=None):
    """Tune ``name`` with ``budget`` trials (its whole grid where that is smaller) into ``folder``; returns the
    comparison's result of the chosen trial (its test metrics, where its run saved them, how it was tuned)."""
    from recbole_cora.tuning import budget_search, read_params_file, tune

    space = Path(params_file) if params_file else default_params_file(name)
    trials, algo = budget_search(read_params_file(space), budget)
    out = tune(space, config_file_list, config_dict, cmd_args, folder=folder, trials=trials, algo=algo)
    best = out["best"]
    result = dict(best["test"])
    result.update({"results_dir": best["results_dir"], "run_model": best["run_model"],
                   "tuned": {"trials": out["finished"], "space": space.name, "values": best["values"],
                             "valid": best["valid"]}})
    return result


def side_results(name, result):
    """The rows a model's run printed beside its own (its frozen encoder's, the frozen LLM's zero-shot row), read
    from the run's ``results.json``: ``{"LightGCN (frozen CF encoder, in CoRA's run)": result, ...}``."""
    if "error" in result or not result.get("results_dir"):
        return {}
    path = Path(result["results_dir"]) / "results.json"
    if not path.is_file():
        return {}
    side = {}
    for key, value in json.loads(path.read_text()).items():
        if key != result.get("run_model", name):  # the run's own row (MF's run saves it as BPR's)
            label = f"{key[:-1]}, in {name}'s run)" if key.endswith(")") else f"{key} (in {name}'s run)"
            side[key] = (label, value)
    return side


def comparison_rows(results, task="labeled"):
    """The rows of ``results.table_rows``, with cost columns on each model's "all" (or "users") row, one error row
    for a model that failed, and after a model's rows those its run printed beside them (``side_results``); a side
    row already shown by an earlier run with the same values (the zero-shot row of the same prompts) is not repeated."""
    rows, shown = [], []
    for name, result in results.items():
        if "error" in result:
            rows.append({"model": name, "group": "error", "n": "", "error": result["error"]})
            continue
        for row in table_rows({name: result}, task):
            if row["group"] in ("all", "users"):
                row.update({k: result.get(k) for k in ("trainable_parameters", "train_seconds", "eval_seconds")})
            rows.append(row)
        for key, (label, value) in side_results(name, result).items():
            if (key, value) in shown:
                continue
            shown.append((key, value))
            rows += table_rows({label: value}, task)
    return rows


def write_comparison(folder, results):
    folder = Path(folder)
    task = results_task(results)
    metrics = columns({k: v for k, v in results.items() if "error" not in v}, task)
    rows = comparison_rows(results, task)
    header = ["model", task.header(), "n"] + [t for _, t in metrics]
    header += ["trainable params", "train s", "eval s"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        if row["group"] == "error":
            lines.append(f"| {row['model']} | error | | {row['error'][:120]} |" + " |" * (len(header) - 4))
            continue
        cells = [row["model"], row["group"], _fmt(row["n"])] + [cell(row, m) for m, _ in metrics]
        params = row.get("trainable_parameters")
        seconds = [row.get("train_seconds"), row.get("eval_seconds")]
        cells += [f"{params:,}" if params else ""] + [f"{t:.1f}" if t is not None else "" for t in seconds]
        lines.append("| " + " | ".join(cells) + " |")
    lines = footnote(lines) + ["", tuning_line(results)]
    (folder / "comparison.md").write_text("\n".join(lines) + "\n")
    fields = ["model", "group", "n"] + [m for m, _ in metrics] + ["trainable_parameters", "train_seconds", "eval_seconds", "error"]
    with open(folder / "comparison.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    plot_comparison(folder, rows, task, metrics)
    return "\n".join(lines)


def tuning_line(results):
    """What the table's rows ran with: tuned on valid (how many trials each), or not tuned: the comparison's own
    files and options over each model's defaults."""
    done = {name: r for name, r in results.items() if "error" not in r}
    tuned = {name: r["tuned"] for name, r in done.items() if r.get("tuned")}
    if not tuned:
        return ("None tuned: every model ran with this comparison's files and options (`model_options` for one model's "
                "own) over its defaults (RecBole's for RecBole's models); --tune_budget N tunes each on valid first "
                "(docs/tuning.md).")
    said = ", ".join(f"{name} ({t['trials']} trials of {t['space']}: {t['values']})" for name, t in tuned.items())
    untuned = [name for name in done if name not in tuned]
    return (f"Tuned on valid before its test row: {said}." + (f" Not tuned: {', '.join(untuned)}." if untuned else ""))


def plot_comparison(folder, rows, task="labeled", metrics=()):
    """A bar chart per model: AUC and UAUC for all, warm and cold rows (labeled), or NDCG and Recall at each k
    (next-item); skipped without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        getLogger().warning("matplotlib is not installed: no comparison.png (pip install matplotlib, or the plot "
                            "extra: pip install -e '.[plot]' in a clone)")
        return None
    models = list(dict.fromkeys(r["model"] for r in rows if r["group"] != "error"))
    if not models:
        return None
    if get_task(task).ranking:
        return _plot_ranking(folder, plt, rows, models, metrics)
    fig, axes = plt.subplots(1, 2, figsize=(max(8, 1.6 * len(models) + 4), 4.5), sharey=True)
    width = 0.8 / len(GROUPS)
    colors = {"all": "#3b6ea8", "warm": "#e39c37", "cold": "#7aa974"}
    for ax, (metric, title) in zip(axes, columns({}, "labeled")[:2]):
        for k, group in enumerate(GROUPS):
            values = []
            for model in models:
                match = [r for r in rows if r["model"] == model and r["group"] == group]
                value = match[0].get(metric) if match else None
                values.append(value if isinstance(value, (int, float)) and value == value else 0.0)
            positions = [i + (k - 1) * width for i in range(len(models))]
            bars = ax.bar(positions, values, width, label=group, color=colors[group])
            ax.bar_label(bars, labels=[f"{v:.3f}" if v else "" for v in values], fontsize=7, rotation=90, padding=2)
        ax.axhline(0.5, color="grey", linewidth=0.8, linestyle="--")
        ax.set_xticks(range(len(models)))
        ax.set_xticklabels(models, rotation=20, ha="right")
        ax.set_title(f"test {title}")
        ax.set_ylim(0.0, 1.05)
    axes[0].set_ylabel("higher is better (0.5 = chance)")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, title="test rows", loc="lower center", ncol=len(GROUPS), frameon=False)
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    path = Path(folder) / "comparison.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _plot_ranking(folder, plt, rows, models, metrics):
    """NDCG@k and Recall@k per model, one bar per k (Hit@k where there is no Recall: the candidate task)."""
    fig, axes = plt.subplots(1, 2, figsize=(max(8, 1.6 * len(models) + 4), 4.5))
    second = "recall" if any(key.startswith("recall@") for key, _ in metrics) else "hit"
    for ax, name in zip(axes, ("ndcg", second)):
        keys = [(key, title) for key, title in metrics if key.startswith(name + "@")]
        width = 0.8 / max(1, len(keys))
        top = 0.0
        for k, (key, title) in enumerate(keys):
            values = []
            for model in models:
                value = next((r.get(key) for r in rows if r["model"] == model and r["group"] == "users"), None)
                values.append(value if isinstance(value, (int, float)) and value == value else 0.0)
            positions = [i + (k - (len(keys) - 1) / 2) * width for i in range(len(models))]
            bars = ax.bar(positions, values, width, label=title.split("@")[1])
            ax.bar_label(bars, labels=[f"{v:.3f}" for v in values], fontsize=7, rotation=90, padding=2)
            top = max([top, *values])
        ax.set_xticks(range(len(models)))
        ax.set_xticklabels(models, rotation=20, ha="right")
        ax.set_title(f"test {keys[0][1].split('@')[0] if keys else name}@k")
        ax.set_ylim(0.0, top * 1.25 + 1e-6)
        ax.legend(title="k", frameon=False)
    axes[0].set_ylabel("higher is better (over the test users)")
    fig.tight_layout()
    path = Path(folder) / "comparison.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
