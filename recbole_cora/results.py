"""Result tables a person can read (Markdown, CSV) and files a program can read (JSON)."""

import csv
import json
import math
from pathlib import Path

from recbole_cora.evaluator import GROUPS

COLUMNS = (("auc", "AUC"), ("uauc", "UAUC"), ("logloss", "LogLoss"))


def _group_value(result, group, metric):
    key = metric if group == "all" else f"{group}_{metric}"
    return result.get(key)


def _rows_of(result, group):
    return result.get("rows") if group == "all" else result.get(f"{group}_rows")


def table_rows(results):
    """``{model: test_result}`` -> a list of dicts, one per (model, group)."""
    rows = []
    for model, result in results.items():
        for group in GROUPS:
            n_rows = _rows_of(result, group)
            if n_rows is None:
                continue
            row = {"model": model, "rows_group": group, "rows": n_rows}
            for metric, _ in COLUMNS:
                row[metric] = _group_value(result, group, metric)
            rows.append(row)
    return rows


def _fmt(value):
    if value is None:
        return ""
    if isinstance(value, float):
        return "n/a" if math.isnan(value) else f"{value:.4f}"
    return str(value)


def markdown_table(results):
    header = ["model", "test rows", "n"] + [title for _, title in COLUMNS]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in table_rows(results):
        cells = [row["model"], row["rows_group"], _fmt(row["rows"])] + [_fmt(row[m]) for m, _ in COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def save_results(folder, results, config=None):
    """Write ``results.md``, ``results.csv``, ``results.json`` (and ``config.json``) into ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "results.md").write_text(markdown_table(results) + "\n")
    with open(folder / "results.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["model", "rows_group", "rows"] + [m for m, _ in COLUMNS])
        writer.writeheader()
        writer.writerows(table_rows(results))
    (folder / "results.json").write_text(json.dumps(results, indent=2, default=float))
    if config is not None:
        resolved = {k: v for k, v in config.final_config_dict.items() if _jsonable(v)}
        (folder / "config.json").write_text(json.dumps(resolved, indent=2, sort_keys=True, default=str))
    return folder


def _jsonable(value):
    try:
        json.dumps(value, default=str)
        return True
    except (TypeError, ValueError):
        return False
