"""First contact: every option checked before anything trains (all problems at once), a plan printed before the
first stage, one prompt exactly as the LLM reads it, a time estimate from the first steps, empty splits that name
the data's time range, and UAUC marked where it stands on too few users."""

import logging
import math
import os
import warnings
from pathlib import Path

import pytest

from recbole_cora import run_recbole_cora
from recbole_cora.checks import OptionError, check_run
from recbole_cora.config import Config
from recbole_cora.results import SMALL_MARK, markdown_table
from recbole_cora.utils import create_dataset, get_model

from conftest import QUIET, SMALL_CORA
from helpers import write_atomic

ROWS = [(1, 1, 5, 1), (1, 2, 3, 2), (2, 1, 4, 3), (2, 2, 1, 4), (3, 1, 5, 5), (3, 2, 2, 6)]


def checked(model, dataset="ml-100k", **options):
    config = Config(model, dataset, config_dict={**QUIET, **options}, check=False)
    check_run(config, get_model(config["model"]))
    return config


def test_every_problem_is_listed_at_once_before_anything_runs(tiny_llm):
    with pytest.raises(OptionError) as caught:
        checked("CoRA", llm_path=tiny_llm, length_bucketing="train", eval_rows=0, epochs=2, curve_epochs=[1, 5],
                item_text_template="{movie_title} ({year})", prompt_template="{history} {user}? #Answer:",
                cf_model="SASRec")
    problems = caught.value.problems
    expected = ["length_bucketing 'train'", "eval_rows 0", "curve_epochs [5]", "names ['year']",
                "must contain the slot {target}", "unknown slot 'user'", "cf_model 'SASRec' is not a RecBole general"]
    assert len(problems) == len(expected), problems
    for problem, part in zip(problems, expected):
        assert part in problem
    assert str(caught.value).startswith("7 problems in the options (nothing has run yet):\n  1. unknown option value")
    assert not os.path.exists("saved")  # nothing was trained or written


def test_the_llm_and_its_answer_words_are_checked_with_the_tokenizer_alone(tiny_llm, tmp_path):
    with pytest.raises(OptionError, match="answer word 'Nopenope' is not a single token"):
        checked("CoRA", llm_path=tiny_llm, answer_words=["Yes", "Nopenope"])
    with pytest.raises(OptionError) as caught:  # a task the model does not run, and no such LLM: both named
        checked("CoRA", llm_path=str(tmp_path / "none"), task="next_item")
    assert [p.split(" ")[0] for p in caught.value.problems] == ["CoRA", "llm_path"]
    with pytest.raises(OptionError, match="collm_prompt_template must contain the slot {item_emb} exactly once"):
        checked("CoLLM", llm_path=tiny_llm, collm_prompt_template="{history} {user_emb} {target}? #Answer:")
    with pytest.raises(OptionError) as caught:
        checked("Laser", llm_path=tiny_llm, laser_prompt_template="The next item is", history_len=None)
    assert len(caught.value.problems) == 1 and "laser_prompt_template must contain the slot {history}" in str(caught.value)
    checked("CoRA", llm_path=tiny_llm)  # the defaults pass
    checked("LightGCN")  # a RecBole model: its data is there, nothing else to check


def test_the_pipeline_refuses_bad_options_before_the_cf_stage_trains(tiny_llm):
    with pytest.raises(OptionError, match="2 problems"):
        run_recbole_cora("CoRA", "ml-100k", config_dict={**SMALL_CORA, "llm_path": tiny_llm, "history_len": 0,
                                                         "item_text_template": "{plot}"})
    assert not Path("saved/cf").exists()


def test_an_empty_split_names_the_data_s_time_range(tmp_path):
    path = write_atomic(tmp_path, "toy", ROWS)
    config = Config("FM", "toy", config_dict={**QUIET, "data_path": path, "threshold": {"rating": 4},
                                              "eval_args": {"split": {"TB": [100, 200]}, "order": "TO", "mode": "labeled"}})
    with pytest.raises(ValueError, match=r"the valid split is empty.*`timestamp` in the file runs from "
                                         r"1970-01-01 00:00:01 to 1970-01-01 00:00:06 UTC \(1 to 6\)"):
        create_dataset(config).build()
    config = Config("FM", "toy", config_dict={**QUIET, "data_path": path, "threshold": {"rating": 4},
                                              "time_window": ["2001-01-01", "2002-01-01"]})
    with pytest.raises(ValueError, match=r"no interaction is left.*in the file runs from 1970-01-01 00:00:01"):
        create_dataset(config)


def test_recbole_s_pandas_warning_on_token_seq_fields_is_filtered(tmp_path):
    from recbole_cora.compat import silence_recbole_warnings

    path = write_atomic(tmp_path, "toy", ROWS, item_rows=[(1, "A b", 2000), (2, "C", 2001)])
    config = Config("FM", "toy", config_dict={**QUIET, "data_path": path, "threshold": {"rating": 4}})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        silence_recbole_warnings()
        create_dataset(config)
    assert not [w for w in caught if "Series.agg" in str(w.message)], [str(w.message) for w in caught]


def test_the_plan_comes_before_the_first_stage_and_the_prompt_is_what_the_tokenizer_read(tiny_llm, caplog):
    options = {**SMALL_CORA, "state": "INFO", "llm_path": tiny_llm, "train_rows_per_epoch": 64, "eval_rows": 100}
    with caplog.at_level(logging.INFO):
        result = run_recbole_cora("CoRA", "ml-100k", config_dict=options)
    messages = [record.getMessage() for record in caplog.records]
    plan = next(k for k, m in enumerate(messages) if m.startswith("plan: CoRA on ml-100k (labeled task)"))
    stage = next(k for k, m in enumerate(messages) if "LightGCN stage: training" in m)
    assert plan < stage
    block = "\n".join(messages[plan: plan + 8])
    assert "LightGCN (CF encoder): trains into" in block and "at most 3 epochs" in block and "cf_config" in block
    assert "at most 1 epoch(s) of 64 of the" in block and "4 steps of 16 rows per epoch" in block
    assert "on 100 of" in block and "% warm" in block
    timing = next(k for k, m in enumerate(messages) if " s a training step (measured over 3)" in m)
    first_epoch = next(k for k, m in enumerate(messages) if "epoch 0 training" in m and k > stage + 3)
    assert timing < first_epoch
    shown = next(k for k, m in enumerate(messages) if m.startswith("example prompt (prompt_template"))
    assert "#Answer:" in messages[shown + 1]
    tokens = int(messages[shown].split(", ")[-1].split(" ")[0])
    assert tokens > 20
    # the UAUC user counts are in the results, and the table marks a group with too few users
    test = result["test_result"]
    assert test["uauc_users"] >= test["warm_uauc_users"] and isinstance(test["cold_uauc_users"], int)
    assert "UAUC users" in result["table"]


def test_the_example_prompt_is_the_string_the_tokenizer_was_given(tiny_llm):
    from test_cora import build

    config, model, (_, _, test) = build(tiny_llm)
    builder = model.prompts
    given = []
    encode = builder.tokenizer.encode
    builder.tokenizer.encode = lambda text, *a, **k: given.append(text) or encode(text, *a, **k)
    builder._cache.clear()
    rows = test._dataset.inter_feat[:1]
    ids = builder.token_ids(*builder.rows(rows))[0]
    assert len(given) >= 1
    text, example_ids = builder.example(rows)
    builder.tokenizer.encode = encode
    assert text == given[-1] and example_ids == ids
    builder.max_tokens = len(ids) - 1  # a prompt cut for length: the shown text is the cut one
    builder._cache.clear()
    cut_text, cut_ids = builder.example(rows)
    assert len(cut_ids) < len(ids) and cut_text != text and encode(cut_text) == cut_ids


def test_uauc_over_too_few_users_is_marked():
    def result(users):
        return {"auc": 0.6, "uauc": 1.0, "uauc_users": users, "logloss": 0.69, "rows": 40}

    small = markdown_table({"M": result(1)})
    assert f"| 1.0000 {SMALL_MARK} | 1 |" in small and "fewer than 10 users" in small
    large = markdown_table({"M": result(40)})
    assert SMALL_MARK not in large and "| 1.0000 | 40 |" in large
    nan = markdown_table({"M": {**result(0), "uauc": math.nan}})
    assert "| n/a | 0 |" in nan


def test_auc_over_a_handful_of_rows_is_marked():
    # five cold rows printed AUC 1.0000 and 0.0000 beside the other groups with nothing to say so
    from recbole_cora.results import FEW_ROWS_MARK

    few = markdown_table({"M": {"auc": 0.6, "uauc": 0.6, "uauc_users": 40, "logloss": 0.69, "rows": 200,
                                "cold_auc": 1.0, "cold_rows": 5, "cold_uauc": 1.0, "cold_uauc_users": 1}})
    assert f"| M | all | 200 | 0.6000 |" in few and f"| M | cold | 5 | 1.0000 {FEW_ROWS_MARK} |" in few
    assert "AUC over fewer than 30 rows" in few and few.count(FEW_ROWS_MARK) == 2  # the cell and the note


def test_the_plan_counts_each_training_stage_of_a_two_stage_model():
    from recbole.data import data_preparation

    from recbole_cora.plan import describe_plan

    config = Config("CoLLM", "ml-100k", config_dict={**QUIET, "epochs": 2, "train_rows_per_epoch": 64,
                                                      "time_window": ["1998-03-01", "1998-05-01"]})
    dataset = create_dataset(config)
    lines = describe_plan(config, dataset, data_preparation(config, dataset), get_model("CoLLM"))
    train = next(line for line in lines if line.strip().startswith("train"))
    assert "at most 2 (stage 1) + 2 (stage 2) epoch(s) of 64" in train and "16 in all" in train


def test_config_files_take_recbole_s_quoted_list_and_a_missing_file_is_named(tmp_path, capsys, monkeypatch):
    # `--config_files "a.yaml b.yaml"` (RecBole's convention) used to end in a raw FileNotFoundError traceback
    import run_recbole_cora as script

    monkeypatch.chdir(tmp_path)
    (tmp_path / "a.yaml").write_text("epochs: 1\n")
    (tmp_path / "b.yaml").write_text("epochs: 2\n")
    (tmp_path / "with space.yaml").write_text("epochs: 3\n")
    assert script.config_file_list(["a.yaml b.yaml"]) == (["a.yaml", "b.yaml"], [])
    assert script.config_file_list(["a.yaml", "with space.yaml"]) == (["a.yaml", "with space.yaml"], [])
    assert script.main(["--model", "CoRA", "--config_files", "a.yaml gone.yaml"]) == 2
    assert "error: --config_files: no file gone.yaml" in capsys.readouterr().err
