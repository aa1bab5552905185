"""Bad input gets a sentence of ours that names the file, field or option and what to do.

The other rows of the table in docs/errors.md are tested beside the code they guard (test_dataset,
test_cf_stage, test_llm_loading, test_cora, test_dynamic_lora, test_compat, test_resume); each row there
names its test.
"""

import logging
import os
import subprocess
import sys

import pytest
import torch
from recbole.data import data_preparation
from recbole.utils import init_seed

from recbole_cora.config import Config
from recbole_cora.stages import run_cf_stage
from recbole_cora.model.llm_recommender.cora import CoRA
from recbole_cora.utils import create_dataset, get_trainer

from conftest import QUIET, ROOT, SMALL_CORA
from helpers import write_atomic

ROWS = [(1, 1, 5, 1), (1, 2, 3, 2), (2, 1, 4, 3), (2, 2, 1, 4), (3, 1, 5, 5), (3, 2, 2, 6)]


def build(dataset, data_path, **options):
    config = Config("FM", dataset, config_dict={**QUIET, "data_path": data_path, "threshold": {"rating": 4}, **options})
    data = create_dataset(config)
    return data, data.build()


def test_a_header_column_without_a_type_is_named(tmp_path):
    path = write_atomic(tmp_path, "untyped", ROWS, inter_header=["user_id:token", "item_id", "rating:float", "timestamp:float"])
    with pytest.raises(ValueError, match=r"header of '.*untyped\.inter' has column\(s\) \['item_id'\] without a valid type"):
        build("untyped", path)
    path = write_atomic(tmp_path, "badtype", ROWS, item_rows=[(1, "A", 2000)],
                        item_header=["item_id:token", "movie_title:text", "release_year:token"])
    with pytest.raises(ValueError, match=r"badtype\.item' has column\(s\) \['movie_title:text'\].*token_seq"):
        build("badtype", path)


def test_filters_that_leave_nothing_are_named_with_the_rows_they_left(tmp_path):
    path = write_atomic(tmp_path, "toy", ROWS)
    with pytest.raises(ValueError, match=r"no interaction is left \(6 in the file; 0 after time_window \['2001-01-01', '2002-01-01'\]\)"):
        build("toy", path, time_window=["2001-01-01", "2002-01-01"])
    with pytest.raises(ValueError, match=r"the valid split is empty.*6 in the file; 6 after user/item_inter_num_interval"):
        build("toy", path, user_inter_num_interval="[1,inf)",
              eval_args={"split": {"TB": [100, 200]}, "order": "TO", "mode": "labeled"})


@pytest.fixture(scope="module")
def cora(tiny_llm, tmp_path_factory):
    cwd = os.getcwd()
    os.chdir(tmp_path_factory.mktemp("cora"))
    try:
        config = Config("CoRA", "ml-100k", config_dict={**SMALL_CORA, "llm_path": tiny_llm})
        init_seed(config["seed"], config["reproducibility"])
        dataset = create_dataset(config)
        parts = data_preparation(config, dataset)
        config["cf_stage_dir"] = str(run_cf_stage(config, dataset))
        yield config, CoRA(config, parts[0]._dataset), parts
    finally:
        os.chdir(cwd)


def test_prompts_longer_than_the_llms_context_keep_the_target_and_are_counted(cora, caplog):
    config, model, (train, _, _) = cora
    from recbole_cora.data.prompts import PromptBuilder

    history, target = list(range(5, 15)), 20
    full = len(model.prompts.token_ids([history], [target])[0])
    with caplog.at_level(logging.INFO):
        prompts = PromptBuilder(config, train._dataset, model.tokenizer, context_length=full - 3)
    assert prompts.max_tokens == full - 3 and "over the LLM's context" in caplog.text
    with caplog.at_level(logging.WARNING):
        ids = prompts.token_ids([history], [target])[0]
    assert len(ids) <= full - 3 and prompts.truncated == 1 and "1 prompt(s) so far were over" in caplog.text
    text = model.tokenizer.decode(ids, skip_special_tokens=True)
    assert f'"{train._dataset.item_title(target)}"' in text  # the target stays
    assert f'"{train._dataset.item_title(history[0])}"' not in text  # the oldest title went


def test_cold_rows_are_scored_and_flagged_never_dropped(cora):
    config, model, (_, _, test) = cora
    trainer = get_trainer(config["MODEL_TYPE"], "CoRA", config)(config, model)
    struct = trainer.score_rows(model, test)
    warm = test._dataset.inter_feat[config["WARM_FIELD"]].float()
    assert len(struct.get("rec.score")) == len(test._dataset)  # every row, cold ones included
    assert torch.equal(struct.get("data.warm"), warm) and 0 < warm.sum() < len(warm)
    assert torch.isfinite(struct.get("rec.score")).all()
    cold_scores = struct.get("rec.score")[warm == 0]
    assert cold_scores.std() > 0  # cold rows get real scores (their prompt), not a constant


def test_the_command_line_shows_our_sentence_not_a_traceback(tmp_path, tiny_llm, monkeypatch):
    stage = tmp_path / "saved" / "cf"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    options = ["--state=WARNING", "--cf_config={'epochs': 1, 'embedding_size': 8}", "--time_window=['1998-03-01','1998-05-01']"]

    def run(*args):
        done = subprocess.run([sys.executable, str(ROOT / "run_recbole_cora.py"), *args], cwd=tmp_path,
                              capture_output=True, text=True, env=env, timeout=300)
        return done.returncode, done.stderr

    code, err = run("--model", "LightGCN", "--dataset", "nowhere", f"--data_path={tmp_path}")
    assert code == 2 and "dataset folder" in err and "Traceback" not in err
    code, err = run("--model", "CoRA", "--dataset", "ml-100k", f"--llm_path={tmp_path / 'no-such-model'}", *options)
    assert code == 2 and "no-such-model" in err and "does not exist" in err and "Traceback" not in err
    assert not stage.exists()  # the LLM was looked for before any stage trained
    monkeypatch.chdir(tmp_path)  # the CF stage of these options, trained here, then broken
    run_cf_stage(Config("CoRA", "ml-100k", cmd_args=[f"--llm_path={tiny_llm}", *options]))
    (embeddings,) = stage.glob("*/embeddings.safetensors")
    embeddings.write_bytes(embeddings.read_bytes()[:100])
    code, err = run("--model", "CoRA", "--dataset", "ml-100k", f"--llm_path={tiny_llm}", *options)
    assert code == 2 and "truncated or not a CF stage; delete it" in err and "Traceback" not in err
