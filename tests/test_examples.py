"""``examples/<task>/<Model>.yaml``: one per model and task it runs, each passing every check a run makes before it
trains (``check_run``: options, data files, prompt templates, stages, the LLM's tokenizer), so none can go stale."""

from pathlib import Path

import pytest
import yaml

from recbole_cora.checks import check_run
from recbole_cora.config import Config
from recbole_cora.model.lookup import get_model, plugin_model_names

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
FILES = sorted(EXAMPLES.glob("*/*.yaml"))


def test_every_model_has_an_example_for_every_task_it_runs_and_no_more():
    expected = {(task, name) for name in plugin_model_names() for task in get_model(name).tasks}
    found = {(path.parent.name, path.stem) for path in FILES}
    assert found == expected


@pytest.fixture(scope="module")
def llm_cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("llm-cache"))  # the embedded LLM's tokenizer, dequantised once for all


@pytest.mark.parametrize("path", FILES, ids=[f"{p.parent.name}/{p.stem}" for p in FILES])
def test_an_example_passes_every_check_a_run_makes_before_training(path, llm_cache):
    options = yaml.safe_load(path.read_text())
    assert options["task"] == path.parent.name and options["model"] == path.stem
    assert path.read_text().splitlines()[0].startswith("# "), "an example opens with what it runs"
    assert f"python run_recbole_cora.py --config_files examples/{path.parent.name}/{path.name}" in path.read_text()
    config = Config(config_file_list=[str(path)], config_dict={"llm_cache_dir": llm_cache, "state": "ERROR"},
                    check=False)
    check_run(config, get_model(config["model"]))  # raises OptionError with every problem found
    # RecBole takes any key, so a misspelled option would be ignored: every key is one of the model's options
    known = Config(options["model"], options["dataset"], config_dict={"task": options["task"], "state": "ERROR"},
                   check=False).final_config_dict
    assert sorted(set(options) - set(known)) == []
