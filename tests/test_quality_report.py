"""benchmarks/quality.py's plot: every row of the study gets a colour of its own."""

import importlib.util
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
