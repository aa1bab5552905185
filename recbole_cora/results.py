"""Result tables a person can read (Markdown, CSV) and files a program can read (JSON)."""

import csv
import json
import math
from pathlib import Path

from recbole_cora.checkpoint import plain_config
from recbole_cora.tasks import get_task

# A UAUC over fewer users than this is marked in tables: a mean over a handful of users (or one, whose AUC may be
# 1.0000) is not a figure to compare.
UAUC_MIN_USERS = 10
SMALL_MARK = "†"
SMALL_NOTE = f"{SMALL_MARK} UAUC over fewer than {UAUC_MIN_USERS} users (the UAUC users column): too few to compare."
# An AUC over a group of fewer rows than this (a handful of cold rows: AUC 1.0000 or 0.0000) is marked too.
AUC_MIN_ROWS = 30
FEW_ROWS_MARK = "‡"
FEW_ROWS_NOTE = f"{FEW_ROWS_MARK} AUC over fewer than {AUC_MIN_ROWS} rows (the n column): too few to compare."


def columns(results, task="labeled"):
    """(key, title) of the task's metric columns (``Task.columns``): AUC / UAUC / LogLoss, or every ranking metric@k
    the results hold (in RecBole's order), e.g. ("ndcg@10", "NDCG@10")."""
    return get_task(task).columns(results)


def table_rows(results, task="labeled"):
    """``{model: test_result}`` -> a list of dicts ``{model, group, n, <metric>...}``: one per (model, group of
    test rows: all / warm / cold) for the labeled task, one per model (its test users) for a ranking task."""
    task = get_task(task)
    metrics = [key for key, _ in task.columns(results)]
    return [row for model, result in results.items() for row in task.table_rows(model, result, metrics)]


def _fmt(value):
    if value is None:
        return ""
    if isinstance(value, float):
        return "n/a" if math.isnan(value) else f"{value:.4f}"
    return str(value)


def cell(row, metric):
    """A table cell: the value, and a mark for a UAUC over fewer than ``UAUC_MIN_USERS`` users (``SMALL_NOTE``) or an
    AUC over fewer than ``AUC_MIN_ROWS`` rows (``FEW_ROWS_NOTE``)."""
    text = _fmt(row.get(metric))
    users, rows = row.get("uauc_users"), row.get("n")
    if metric == "uauc" and text and text != "n/a" and isinstance(users, int) and users < UAUC_MIN_USERS:
        text += f" {SMALL_MARK}"
    if metric == "auc" and text and text != "n/a" and isinstance(rows, int) and rows < AUC_MIN_ROWS:
        text += f" {FEW_ROWS_MARK}"
    return text


def footnote(lines):
    """``SMALL_NOTE`` and ``FEW_ROWS_NOTE`` under a table that marked a cell with them."""
    notes = [note for mark, note in ((SMALL_MARK, SMALL_NOTE), (FEW_ROWS_MARK, FEW_ROWS_NOTE))
             if any(f" {mark} " in line for line in lines)]
    return [*lines, "", *notes] if notes else lines


def markdown_table(results, task="labeled"):
    header = ["model", get_task(task).header(), "n"] + [title for _, title in columns(results, task)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in table_rows(results, task):
        cells = [row["model"], row["group"], _fmt(row["n"])] + [cell(row, m) for m, _ in columns(results, task)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(footnote(lines))


def save_results(folder, results, config=None, task="labeled"):
    """Write ``results.md``, ``results.csv``, ``results.json`` (and ``config.json``) into ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "results.md").write_text(markdown_table(results, task) + "\n")
    with open(folder / "results.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["model", "group", "n"] + [m for m, _ in columns(results, task)])
        writer.writeheader()
        writer.writerows(table_rows(results, task))
    (folder / "results.json").write_text(json.dumps(results, indent=2, default=float))
    if config is not None:
        (folder / "config.json").write_text(json.dumps(plain_config(config, as_text=True), indent=2, sort_keys=True))
    return folder


def save_curve(path, points):
    """A learning curve (``LLMTrainer`` rows: stage, epoch, training rows seen, the metrics) as CSV."""
    fields = list(dict.fromkeys(key for point in points for key in point))
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(points)
