"""benchmarks/quality.py: every row of the study gets a colour of its own; a model's process keeps the caller's PYTHONPATH."""
import importlib.util
import os
from pathlib import Path


def _quality():
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "quality.py"
    spec = importlib.util.spec_from_file_location("quality_benchmark", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_no_two_models_of_the_study_share_a_colour_and_the_frozen_llm_is_grey():
    quality = _quality()
    names = list(quality.VARIANTS)  # the whole study: ZeroShot, five LLM rows, four RecBole baselines
    colours = quality.colour_map(names)
    assert set(colours) == set(names)
    assert len(set(colours.values())) == len(names), colours  # LightGCN was grey like ZeroShot before
    assert colours["ZeroShot"] == "#7f7f7f"


def test_a_model_process_keeps_the_callers_pythonpath_after_the_checkout():
    quality = _quality()
    env = quality.child_env({"PYTHONPATH": "/opt/site", "HOME": "/root"})
    assert env["PYTHONPATH"].split(os.pathsep) == [str(quality.ROOT), "/opt/site"]
    assert env["HOME"] == "/root"
    assert quality.child_env({})["PYTHONPATH"] == str(quality.ROOT)
