"""Measured tables in the docs are copies of the committed result files (scripts/results_tables.py), never retyped."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import results_tables  # noqa: E402

RESULT = """| model | test | n | NDCG@10 | Hit@1 |
|---|---|---|---|---|
| SASRec | users | 100 | 0.6471 | 0.4000 |
| RSLLM | users | 100 | 0.2155 | 0.0600 |

more text
"""


def test_every_marked_table_in_the_docs_is_its_result_file_s():
    assert results_tables.main(["--check"]) == 0
    marked = [path for path in results_tables.documents() if "<!-- results: " in path.read_text()]
    assert len(marked) >= 4, marked  # the comparisons and the models' embedded runs


def test_a_retyped_figure_is_found_and_the_table_rewritten_from_its_file(tmp_path, monkeypatch):
    monkeypatch.setattr(results_tables, "ROOT", tmp_path)
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "results.md").write_text(RESULT)
    page = tmp_path / "page.md"
    page.write_text("Intro.\n\n<!-- results: runs/results.md columns: model, NDCG@10 rows: RSLLM, SASRec -->\n\n"
                    "| model | NDCG@10 |\n|---|---|\n| RSLLM | 0.2156 |\n| SASRec | 0.6471 |\n\n<!-- /results -->\n\nEnd.\n")
    assert results_tables.update(page, check=True) == ["page.md: the table from runs/results.md"]
    assert "0.2156" in page.read_text()  # check changes nothing
    results_tables.update(page)
    assert "| RSLLM | 0.2155 |\n| SASRec | 0.6471 |\n\n<!-- /results -->\n\nEnd." in page.read_text()
    assert results_tables.update(page, check=True) == []


def test_a_mark_naming_a_missing_file_column_or_row_says_which(tmp_path, monkeypatch):
    monkeypatch.setattr(results_tables, "ROOT", tmp_path)
    (tmp_path / "results.md").write_text(RESULT)
    page = tmp_path / "page.md"
    for spec, message in [("gone.md", "the result file gone.md of a marked table does not exist"),
                          ("results.md columns: model, AUC", "has no column ['AUC']"),
                          ("results.md rows: Laser", "has no row ['Laser']")]:
        page.write_text(f"<!-- results: {spec} -->\n\n| x |\n\n<!-- /results -->\n")
        with pytest.raises(results_tables.TableError, match=message.replace("[", r"\[").replace("]", r"\]")):
            results_tables.update(page)


def test_a_result_file_git_ignores_and_no_commit_holds_is_refused(tmp_path, monkeypatch):
    """A table quoting a file under an ignored folder passes here and fails on every clone, where the file is absent."""
    monkeypatch.setattr(results_tables, "ROOT", tmp_path)
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / ".gitignore").write_text("results/\n")
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "results.md").write_text(RESULT)
    page = tmp_path / "page.md"
    page.write_text("<!-- results: results/results.md -->\n\n| x |\n\n<!-- /results -->\n")
    with pytest.raises(results_tables.TableError, match="ignored by git and not committed"):
        results_tables.update(page, check=True)
    subprocess.run(["git", "add", "-f", "results/results.md"], cwd=tmp_path, check=True)  # tracked: a clone has it
    assert results_tables.update(page, check=True) == ["page.md: the table from results/results.md"]


CURVE = """| model | training rows | AUC |
|---|---|---|
| CoRA | 1000 | 0.6380 |
| CoRA | 4000 | 0.6615 |
| CoRA | 16000 | 0.6733 |
| TALLRec | 1000 | 0.5317 |
| TALLRec | 16000 | 0.5427 |
"""


def test_a_curve_s_rows_are_chosen_by_model_and_budget(tmp_path, monkeypatch):
    """A model has one row per budget: ``rows`` keeps all of a model's rows, ``where`` the budgets asked for."""
    monkeypatch.setattr(results_tables, "ROOT", tmp_path)
    (tmp_path / "quality.md").write_text(CURVE)
    page = tmp_path / "page.md"
    page.write_text("<!-- results: quality.md rows: TALLRec, CoRA where: training rows = 1000, 16000 -->\n\n| x |\n\n"
                    "<!-- /results -->\n")
    results_tables.update(page)
    assert ("| model | training rows | AUC |\n|---|---|---|\n| TALLRec | 1000 | 0.5317 |\n| TALLRec | 16000 | 0.5427 |\n"
            "| CoRA | 1000 | 0.6380 |\n| CoRA | 16000 | 0.6733 |\n") in page.read_text()
    page.write_text("<!-- results: quality.md rows: TALLRec where: training rows = 4000 -->\n\n| x |\n\n<!-- /results -->\n")
    with pytest.raises(results_tables.TableError, match="has no row .'TALLRec'. where training rows is one of .'4000'."):
        results_tables.update(page)
    page.write_text("<!-- results: quality.md where: budget = 4000 -->\n\n| x |\n\n<!-- /results -->\n")
    with pytest.raises(results_tables.TableError, match="has no column .'budget'."):
        results_tables.update(page)
