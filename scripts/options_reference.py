"""Write docs/options.md, the options reference, from the YAML files that hold the options' defaults and comments
(properties/overall.yaml, properties/task/*.yaml, properties/model/*.yaml), so the reference cannot drift from them.

    python scripts/options_reference.py          # rewrite docs/options.md
    python scripts/options_reference.py --check  # exit 1 if docs/options.md differs from what the files give

tests/test_options_reference.py runs the check.
"""

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROPERTIES = ROOT / "properties"
OUT = ROOT / "docs" / "options.md"
KEY = re.compile(r"^([A-Za-z_][\w]*):(.*)$")
TYPED = re.compile(r"^\((\w+(?:\|\w+)*)\)\s*(.*)$")


def split_comment(text):
    """(value, comment) of the text after ``key:``: the comment starts at the first `` #`` outside quotes."""
    quote = None
    for k, char in enumerate(text):
        if char in "'\"" and (quote is None or quote == char):
            quote = None if quote else char
        elif char == "#" and quote is None and (k == 0 or text[k - 1] == " "):
            return text[:k].strip(), text[k + 1:].strip()
    return text.strip(), ""


def read_options(path):
    """``[(section, [(option, default, type, text)])]`` of one YAML file: top-level options in file order, each
    section opened by a comment line at column 0 (the file's own headings)."""
    sections = [("", [])]
    current = None
    for line in path.read_text().splitlines():
        if not line.strip():
            current = None
            continue
        if line.startswith("#"):
            heading = line.lstrip("#").strip()
            if sections[-1][1] or not sections[-1][0]:
                sections.append((heading, []))
            else:
                sections[-1] = (f"{sections[-1][0]} {heading}", [])
            current = None
            continue
        match = KEY.match(line)
        if match:
            value, comment = split_comment(match.group(2))
            typed = TYPED.match(comment)
            kind, text = (typed.group(1), typed.group(2)) if typed else ("", comment)
            current = [match.group(1), value, kind, text, []]
            sections[-1][1].append(current)
            continue
        if current is None:
            continue
        value, comment = split_comment(line.strip())
        if value:  # a nested line of a dict or list default
            current[4].append(value)
        if comment:
            joint = "" if current[3].endswith(("/", "-")) else " "  # a word cut at a line's end stays whole
            current[3] = f"{current[3]}{joint}{comment}".strip()
    out = []
    for heading, options in sections:
        rows = [(name, value if value else "; ".join(nested), kind, text) for name, value, kind, text, nested in options]
        if rows:
            out.append((heading, rows))
    return out


def cell(text):
    return text.replace("|", "\\|")


def render():
    files = [PROPERTIES / "overall.yaml", *sorted((PROPERTIES / "task").glob("*.yaml")),
             *sorted((PROPERTIES / "model").glob("*.yaml"))]
    lines = ["# Options", "",
             "Every option recbole-cora adds to RecBole's, with its default and what it does, as the package's YAML "
             "files give them (this page is generated from them by `python scripts/options_reference.py`). RecBole's "
             "own options keep their meaning and defaults. Order of precedence, lowest first: RecBole's defaults; "
             "`properties/overall.yaml`; `properties/model/<Model>.yaml`; the task's `properties/task/<task>.yaml`; "
             "`dataset_configs/<dataset>.yaml` and its `task_options`; your YAML files; `config_dict`; `--key=value`.",
             "", "Files: " + ", ".join(f"[`{p.relative_to(ROOT)}`](#{anchor(p)})" for p in files), ""]
    for path in files:
        lines += [f"## {path.relative_to(ROOT)}", ""]
        for heading, rows in read_options(path):
            if heading:
                lines += [f"*{cell(heading)}*", ""]
            lines += ["| option | default | type | what it does |", "|---|---|---|---|"]
            lines += [f"| `{name}` | `{cell(value)}` | {kind} | {cell(text)} |" for name, value, kind, text in rows]
            lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def anchor(path):
    """The heading's anchor as Markdown renderers make it (lower case, punctuation dropped, spaces to dashes)."""
    return re.sub(r"[^\w\- ]", "", str(path.relative_to(ROOT)).lower()).replace(" ", "-")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="exit 1 if docs/options.md is not what the files give")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        same = OUT.is_file() and OUT.read_text() == text
        if not same:
            print(f"{OUT.relative_to(ROOT)} differs from the YAML files: run python scripts/options_reference.py",
                  file=sys.stderr)
        return 0 if same else 1
    OUT.write_text(text)
    print(f"wrote {OUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
