"""The files ``--predict`` reads and writes: pairs in, scores out (tab-separated)."""

import csv

from recbole_cora.runs.finding import RunLoadError


def read_pairs(path):
    """(users, items, times, line numbers) of a pairs file: ``user<TAB>item[<TAB>time]`` per line; a header line
    ``user_id<TAB>item_id...`` and empty lines are skipped."""
    users, items, times, lines = [], [], [], []
    with open(path, newline="", encoding="utf-8") as f:
        for number, row in enumerate(csv.reader(f, delimiter="\t"), 1):
            if not row or not any(cell.strip() for cell in row):
                continue
            if number == 1 and row[0].split(":")[0] in ("user_id", "user", "uid"):
                continue
            if len(row) < 2:
                raise RunLoadError(f"{path}, line {number}: write a user token and an item token separated by a tab "
                                   f"(and optionally a time); got {row!r}.")
            users.append(row[0].strip())
            items.append(row[1].strip())
            times.append(row[2].strip() if len(row) > 2 and row[2].strip() else None)
            lines.append(number)
    if not users:
        raise RunLoadError(f"{path} holds no pairs: write one 'user<TAB>item' per line.")
    return users, items, times, lines


def write_scores(path, users, items, result, titles=None):
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, delimiter="\t", lineterminator="\n")
        writer.writerow(["user", "item", "score", "warm"] + (["title"] if titles else []))
        for k, (user, item) in enumerate(zip(users, items)):
            row = [user, item, f"{float(result['score'][k]):.6f}", "warm" if bool(result["warm"][k]) else "cold"]
            writer.writerow(row + ([titles[k]] if titles else []))
