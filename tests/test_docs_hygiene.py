"""User docs (README, docs/, benchmarks/*.md, examples/, --help) speak of the package: no commit hash as evidence, no
path of this project's machines, no issue number. How the package got here belongs in commits and CHANGELOG.md."""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HASH = re.compile(r"(?<![\w/.:-])(?=[0-9a-f]*[a-f])(?=[0-9a-f]*[0-9])[0-9a-f]{7,40}(?![\w-])")
# an absolute path (not a folder of the repository named work/: benchmarks/quality/encoder-residual/work/)
MACHINE_PATH = re.compile(r"((?<![\w.-])(/work/|/home/|/root/|/tmp/)|\.\./shared\b)")
ISSUE = re.compile(r"\bissues?\s*#?\d+|(?<![\w&])#\d{1,4}\b", re.IGNORECASE)


def user_docs():
    files = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md")), *sorted((ROOT / "benchmarks").glob("*.md")),
             *sorted((ROOT / "examples").rglob("*.yaml"))]
    return {str(path.relative_to(ROOT)): path.read_text() for path in files}


def findings(name, text):
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        for pattern, what in ((HASH, "a commit hash"), (MACHINE_PATH, "a machine path"), (ISSUE, "an issue number")):
            for match in pattern.finditer(line):
                found.append(f"{name}:{number}: {what} {match.group(0)!r}")
    return found


def test_the_patterns_find_what_they_are_for():
    text = ("fixed in 3fa9c2e1 (issue 28), see /work/main/x and ../shared/datasets; #12\nAUC 0.7047, lr 1e-4, ml-1m, 2f8 a1b2,"
            " benchmarks/quality/encoder-residual/work/results")
    assert [f.split(": ", 1)[1] for f in findings("x", text)] == [
        "a commit hash '3fa9c2e1'", "a machine path '/work/'", "a machine path '../shared'", "an issue number 'issue 28'",
        "an issue number '#12'"]


def test_user_docs_carry_no_commit_hash_machine_path_or_issue_number():
    found = [line for name, text in user_docs().items() for line in findings(name, text)]
    assert found == []


def test_the_command_line_help_carries_none_either():
    text = subprocess.run([sys.executable, str(ROOT / "run_recbole_cora.py"), "--help"], capture_output=True,
                          text=True, check=True).stdout
    assert findings("--help", text) == []


def test_the_citation_file_cites_every_paper_a_model_implements():
    import yaml

    cited = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    ids = {identifier["value"] for reference in cited["references"] for identifier in reference.get("identifiers", [])}
    readme = (ROOT / "README.md").read_text()
    for path in sorted((ROOT / "recbole_cora" / "model" / "llm_recommender").glob("*.py")):
        for number in re.findall(r"arXiv:(\d{4}\.\d{4,5})", path.read_text()):
            assert f"arXiv:{number}" in ids, (path.name, number)
            assert f"https://arxiv.org/abs/{number}" in readme, (path.name, number)
    assert (ROOT / "LICENSE").read_text().startswith("MIT License") and cited["license"] == "MIT"


def test_every_figure_of_the_readme_s_model_table_is_one_of_the_measured_results():
    readme = (ROOT / "README.md").read_text()
    table = readme[readme.index("## Models"):readme.index("## Your own data")]
    measured = (ROOT / "benchmarks" / "QUALITY.md").read_text()
    figures = re.findall(r"\b0\.\d{4}\b", table)
    assert len(figures) >= 10 and [f for f in figures if f not in measured] == []
