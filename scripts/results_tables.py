"""Copy measured tables from the committed result files into the documents that quote them.

    python scripts/results_tables.py            # rewrite every marked table from its result file
    python scripts/results_tables.py --check    # exit 1 naming each table that differs from its file (the tests run this)

A document marks a table it quotes:

    <!-- results: benchmarks/candidates_comparison/comparison.md columns: model, n, Hit@1, NDCG@10 rows: SASRec, RSLLM -->

    | model | n | Hit@1 | NDCG@10 |
    ...

    <!-- /results -->

The table between the marks is the first markdown table of the result file (a ``comparison.md``, ``quality.md`` or
``results.md`` that the package or a benchmark wrote), its cells exactly as written there, reduced to ``columns`` and
``rows`` when given: ``rows`` names first cells (every row that starts with one, grouped in the mark's order, each
group in the file's order), and ``where: column = a, b`` keeps the rows whose cell in that column is one of those:

    <!-- results: benchmarks/quality/ml-1m-h200/quality.md columns: model, AUC rows: CoRA-MF, TALLRec where: training rows = 1000, 16000 -->
 So a figure quoted on two pages is the same figure, and a
table cannot drift from the run that produced it: rerun the run, then this script.
"""

import argparse
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"(<!-- results: (?P<spec>.*?) -->\n)(?P<table>.*?)(<!-- /results -->)", re.S)
DOCUMENTS = ("README.md", "docs", "benchmarks")


class TableError(ValueError):
    pass


def cells(line):
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def first_table(path):
    """(header, rows) of the first markdown table in ``path``."""
    lines, started = [], False
    for line in path.read_text().splitlines():
        if line.startswith("|"):
            lines.append(line)
            started = True
        elif started:
            break
    if len(lines) < 2:
        raise TableError(f"{path.relative_to(ROOT)}: no markdown table in it")
    return cells(lines[0]), [cells(line) for line in lines[2:]]


def ignored(path):
    """Whether git ignores ``path`` and does not track it (a file a clone will not have); False outside a git work tree."""
    try:
        done = subprocess.run(["git", "check-ignore", "-q", str(path)], cwd=ROOT, capture_output=True)
    except OSError:  # no git on this machine
        return False
    return done.returncode == 0  # 1: not ignored or tracked; 128: not a repository


def parse_spec(spec, document):
    """(source path, columns or None, rows or None) of a block's mark."""
    match = re.fullmatch(r"(?P<file>\S+)(?: columns: (?P<columns>.*?))?(?: rows: (?P<rows>.*?))?"
                         r"(?: where: (?P<where_column>[^=]+?) = (?P<where>.*?))?", spec.strip())
    if not match:
        raise TableError(f"{document}: cannot read the mark '<!-- results: {spec} -->' "
                         "(file [columns: a, b] [rows: x, y] [where: column = v, w])")
    source = ROOT / match["file"]
    if not source.is_file():
        raise TableError(f"{document}: the result file {match['file']} of a marked table does not exist")
    if ignored(source):
        raise TableError(f"{document}: the result file {match['file']} of a marked table is ignored by git and not "
                         f"committed, so a clone lacks it: commit it with git add -f, or quote a committed file")
    split = lambda text: [part.strip() for part in text.split(",")] if text else None  # noqa: E731
    where = (match["where_column"].strip(), split(match["where"])) if match["where_column"] else None
    return source, split(match["columns"]), split(match["rows"]), where


def render(source, columns, rows, document, where=None):
    header, body = first_table(source)
    columns = columns or header
    missing = [column for column in columns + ([where[0]] if where else []) if column not in header]
    if missing:
        raise TableError(f"{document}: {source.relative_to(ROOT)} has no column {missing} (it has {header})")
    if where:
        at = header.index(where[0])
        body = [row for row in body if at < len(row) and row[at] in where[1]]
    if rows is not None:
        absent = [name for name in rows if not any(row[0] == name for row in body)]
        if absent:
            raise TableError(f"{document}: {source.relative_to(ROOT)} has no row {absent}"
                             + (f" where {where[0]} is one of {where[1]}" if where else ""))
        body = [row for name in rows for row in body if row[0] == name]
    index = [header.index(column) for column in columns]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(row[i] if i < len(row) else "" for i in index) + " |" for row in body]
    return "\n" + "\n".join(lines) + "\n\n"  # blank lines around it: Markdown reads a table beside an HTML comment as HTML


def update(path, check=False):
    """The marked tables of ``path`` brought up to date (written unless ``check``); returns the stale ones' sources."""
    text = path.read_text()
    stale = []

    def replace(match):
        document = str(path.relative_to(ROOT))
        source, columns, rows, where = parse_spec(match["spec"], document)
        table = render(source, columns, rows, document, where)
        if table != match["table"]:
            stale.append(f"{document}: the table from {source.relative_to(ROOT)}")
        return match.group(1) + table + match.group(4)

    new = BLOCK.sub(replace, text)
    if new != text and not check:
        path.write_text(new)
    return stale


def documents(root=ROOT):
    for name in DOCUMENTS:
        target = root / name
        yield from sorted(target.rglob("*.md")) if target.is_dir() else [target]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if a table differs from its file")
    args = parser.parse_args(argv)
    stale = []
    try:
        for path in documents():
            stale += update(path, check=args.check)
    except TableError as error:
        print(f"results_tables: {error}", file=sys.stderr)
        return 2
    for line in stale:
        print(("differs: " if args.check else "updated: ") + line)
    return 1 if stale and args.check else 0


if __name__ == "__main__":
    sys.exit(main())
