"""Result tables a person can read (Markdown, CSV) and files a program can read (JSON)."""

import csv
import json
import math
from pathlib import Path

from recbole_cora.evaluator import GROUPS

COLUMNS = (("auc", "AUC"), ("uauc", "UAUC"), ("logloss", "LogLoss"))


def table_rows(results):
    """``{model: test_result}`` -> a list of dicts ``{model, group, n, auc, uauc, logloss}``, one per
    (model, group of test rows)."""
    rows = []
    for model, result in results.items():
        for group in GROUPS:
            prefix = "" if group == "all" else f"{group}_"
            n_rows = result.get(f"{prefix}rows")
            if n_rows is None:
                continue
            row = {"model": model, "group": group, "n": n_rows}
            row.update({metric: result.get(prefix + metric) for metric, _ in COLUMNS})
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
        cells = [row["model"], row["group"], _fmt(row["n"])] + [_fmt(row[m]) for m, _ in COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def save_results(folder, results, config=None):
    """Write ``results.md``, ``results.csv``, ``results.json`` (and ``config.json``) into ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "results.md").write_text(markdown_table(results) + "\n")
    with open(folder / "results.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["model", "group", "n"] + [m for m, _ in COLUMNS])
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
