"""The tasks: one registry, asked by every part that differs by task; no part outside the tasks compares task names."""

import ast
from pathlib import Path

import pytest
from recbole.trainer import Trainer

import run_recbole_cora
from recbole_cora.checkpoint import split_stage_folder, stage_folder, stage_folders
from recbole_cora.config import Config
from recbole_cora.data import LabeledDataset, NextItemDataset
from recbole_cora.tasks import (TASKS, CandidateEvaluationMixin, LabeledEvaluationMixin, RankingEvaluationMixin,
                                get_task, results_task)
from recbole_cora.training import CheckpointMixin
from recbole_cora.utils import get_trainer

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "recbole_cora"


def test_the_registry_the_protocol_files_and_the_command_line_name_the_same_tasks():
    protocols = sorted(path.stem for path in (ROOT / "properties" / "task").glob("*.yaml"))
    assert sorted(TASKS) == protocols == sorted(run_recbole_cora.TASK_NAMES)
    for name, task in TASKS.items():
        assert task.name == name and get_task(name) is task and get_task(task) is task
        assert (ROOT / "properties" / "presets" / task.embedded_preset).is_file()


def test_an_unknown_task_is_refused_with_the_known_ones():
    with pytest.raises(ValueError, match=r"task 'ranking' is unknown: use one of \['candidates', 'labeled', 'next_item'\]"):
        get_task("ranking")


def _is_task(node):
    """``config["task"]``, ``task``, ``x.task``, ``model_tasks(...)``, ``x.tasks[0]``: something that holds a task."""
    if isinstance(node, ast.Subscript):
        return (isinstance(node.slice, ast.Constant) and node.slice.value == "task") or _is_task(node.value)
    if isinstance(node, ast.Call):
        return _is_task(node.func)
    return (isinstance(node, ast.Name) and node.id in ("task", "tasks", "model_tasks")) or (
        isinstance(node, ast.Attribute) and node.attr in ("task", "tasks"))


def task_comparisons(path):
    """Line numbers of ``path`` where a comparison (==, !=, in) sets a task against a task's name."""
    names = set(TASKS)
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
            constants = {c.value for operand in operands for c in ast.walk(operand) if isinstance(c, ast.Constant)}
            if constants & names and any(_is_task(part) for operand in operands for part in ast.walk(operand)):
                found.append(node.lineno)
    return found


def test_no_part_outside_the_tasks_compares_task_names():
    offenders = {}
    for path in PACKAGE.rglob("*.py"):
        if path.parent.name == "tasks":
            continue
        lines = task_comparisons(path)
        if lines:
            offenders[str(path.relative_to(ROOT))] = lines
    assert offenders == {}


def test_the_comparison_finder_finds_a_comparison(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text("x = config['task'] == 'candidates'\ny = task in ('next_item', 'other')\nz = 'labeled'\n"
                      "w = model.tasks[0] == 'labeled'\nv = slots.index('candidates') < 2\n")
    assert task_comparisons(sample) == [1, 2, 4]


@pytest.mark.parametrize("task, mixin, dataset_class", [
    ("labeled", LabeledEvaluationMixin, LabeledDataset),
    ("next_item", RankingEvaluationMixin, None),  # a general model on the next-item task reads RecBole's own data
    ("candidates", CandidateEvaluationMixin, NextItemDataset),
])
def test_a_recbole_model_gets_its_task_s_evaluation_and_dataset(task, mixin, dataset_class):
    config = Config("LightGCN", "ml-100k", config_dict={"task": task, "state": "ERROR"})
    trainer_class = get_trainer(config["MODEL_TYPE"], "LightGCN", config)
    assert issubclass(trainer_class, Trainer) and issubclass(trainer_class, mixin)
    assert issubclass(trainer_class, CheckpointMixin)
    assert trainer_class.__mro__.index(mixin) < trainer_class.__mro__.index(CheckpointMixin)
    assert get_task(config).dataset_class(config) is dataset_class


def test_a_sequential_model_on_the_next_item_task_reads_the_plugin_s_sequential_data():
    config = Config("SASRec", "ml-100k", config_dict={"task": "next_item", "state": "ERROR"})
    assert get_task(config).dataset_class(config) is NextItemDataset


def test_a_results_table_knows_its_columns_from_its_metrics():
    assert results_task({"BPR": {"auc": 0.6, "rows": 10}}).name == "labeled"
    assert results_task({"SASRec": {"ndcg@10": 0.1, "users": 5}}).ranking


def test_stage_folders_are_named_and_read_in_one_place(tmp_path):
    assert stage_folder(tmp_path / "CoLLM-x", None) == str(tmp_path / "CoLLM-x")
    assert stage_folder(tmp_path / "CoLLM-x", "2") == str(tmp_path / "CoLLM-x-step2")
    (tmp_path / "CoLLM-x-step1").mkdir()
    (tmp_path / "CoLLM-x-step2.old").mkdir()  # a stage folder set aside by a publish that died (resolve_dir)
    (tmp_path / "CoLLM-xy-step1").mkdir()  # another run whose name starts the same
    (tmp_path / "CoRA-a").mkdir()
    assert stage_folders(tmp_path / "CoLLM-x") == {"1": tmp_path / "CoLLM-x-step1", "2": tmp_path / "CoLLM-x-step2.old"}
    assert stage_folders(tmp_path / "CoRA-a") == {}
    assert split_stage_folder(tmp_path / "CoLLM-x-step2.old") == (tmp_path / "CoLLM-x", "2")
    assert split_stage_folder(tmp_path / "CoRA-a") == (tmp_path / "CoRA-a", None)
    assert split_stage_folder(tmp_path / "CoRA-stepwise") == (tmp_path / "CoRA-stepwise", None)
