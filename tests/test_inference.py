"""Using a trained run: load it back from its folder, score pairs, recommend; bad runs get one sentence each."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from recbole_cora import load_data_and_model, load_run, run_recbole_cora
from recbole_cora.runs import RunLoadError, read_pairs

from conftest import QUIET, ROOT, SMALL_CORA


@pytest.fixture(scope="module")
def cora_run(tiny_llm, tmp_path_factory):
    """A small CoRA run, trained once for the module in its own folder."""
    import os

    folder = tmp_path_factory.mktemp("cora_run")
    cwd = os.getcwd()
    os.chdir(folder)
    try:
        options = {**SMALL_CORA, "llm_path": tiny_llm, "train_rows_per_epoch": 64, "eval_rows": 120}
        result = run_recbole_cora("CoRA", "ml-100k", config_dict=options)
    finally:
        os.chdir(cwd)
    return result


def test_a_loaded_run_gives_the_run_s_own_test_metrics(cora_run):
    run = load_run(cora_run["results_dir"])  # the results folder names the saved model (run.json)
    result = run.evaluate("test")
    for key in ("auc", "uauc", "logloss", "rows", "warm_auc", "cold_auc", "uauc_users"):
        assert result[key] == cora_run["test_result"][key], key
    config, model, dataset, train, valid, test = load_data_and_model(run.path)
    assert config["model"] == "CoRA" and len(test._dataset) == len(run.test_data._dataset)
    trained = {k: v for k, v in model.trainable_state_dict().items()}
    assert all(torch.equal(trained[k], v) for k, v in run.model.trainable_state_dict().items())


def test_pairs_score_as_their_rows_in_input_order_and_cold_rows_are_flagged(cora_run):
    run = load_run(cora_run["results_dir"])
    data = run.test_data._dataset
    feat = data.inter_feat
    users, items, times = feat["user_id"], feat["item_id"], feat["timestamp"]
    # rows whose user has no other row at the same second: their history is exactly "the positives before it"
    keys = list(zip(users.tolist(), times.tolist()))
    alone = [k for k, key in enumerate(keys) if keys.count(key) == 1 and not _tied_in_all(run, key)]
    warm = [k for k in alone if feat["warm"][k] > 0.5][:15]
    cold = [k for k in alone if feat["warm"][k] < 0.5][:15]
    assert len(warm) >= 5 and len(cold) >= 5
    order = sorted(warm + cold, reverse=True)  # not the data's order
    user_tokens = [str(run.dataset.field2id_token["user_id"][users[k]]) for k in order]
    item_tokens = [str(run.dataset.field2id_token["item_id"][items[k]]) for k in order]
    scored = run.predict_pairs(user_tokens, item_tokens, [float(times[k]) for k in order])
    expected = run.trainer.score_rows(run.model, _RowsOf(data, order)).get("rec.score")
    assert torch.equal(scored["score"], expected.double())
    assert scored["warm"].tolist() == [bool(feat["warm"][k] > 0.5) for k in order]
    assert 0 < int(scored["warm"].sum()) < len(order)  # both kinds are there, and flagged


def _tied_in_all(run, key):
    feat = run.dataset.inter_feat
    same = (feat["user_id"] == key[0]) & (feat["timestamp"] == key[1])
    return int(same.sum()) > 1


class _RowsOf:
    def __init__(self, data, rows):
        self._dataset = data.copy(data.inter_feat[torch.tensor(rows)])

    def collate_fn(self, index):
        return self._dataset[torch.as_tensor(index)]


def test_recommend_reranks_the_cf_candidates_by_the_model_s_probability(cora_run):
    run = load_run(cora_run["results_dir"])
    uid = max(run.positives(), key=lambda u: len(run.positives()[u]))  # a user with many known positives
    user = str(run.dataset.field2id_token["user_id"][uid])
    rows = run.recommend([user], k=5, candidates=20)
    assert [r["rank"] for r in rows] == [1, 2, 3, 4, 5] and rows[0]["source"] == "LightGCN top 20"
    encoder = run.model.reference_encoder()
    cf = (encoder.item_table @ encoder.user_table[uid]).double()
    known = run.positives()[uid]
    cf[0] = -float("inf")
    cf[list(known)] = -float("inf")
    pool = torch.topk(cf, 20).indices.tolist()
    tokens = [str(run.dataset.field2id_token["item_id"][i]) for i in pool]
    scores = run.predict_pairs([user] * 20, tokens)["score"]
    best = torch.argsort(scores, descending=True, stable=True)[:5].tolist()
    assert [r["item"] for r in rows] == [tokens[i] for i in best]
    assert all(run.dataset.field2token_id["item_id"][r["item"]] not in known for r in rows)
    assert rows[0]["title"] == run.dataset.item_title(pool[best[0]])


def test_a_recbole_model_s_run_loads_through_the_same_call():
    result = run_recbole_cora("LightGCN", "ml-100k", config_dict={**QUIET, "epochs": 2, "eval_rows": 300,
                                                                  "time_window": ["1998-03-01", "1998-05-01"]})
    run = load_run(result["results_dir"])
    assert run.kind == "recbole" and run.path.suffix == ".pth"
    again = run.evaluate("test")
    for key in ("auc", "uauc", "logloss", "rows"):
        assert again[key] == result["test_result"][key], key
    rows = run.recommend(["196"], k=3)
    assert len(rows) == 3 and rows[0]["source"] == "all items" and rows[0]["score"] >= rows[2]["score"]


def test_bad_runs_and_bad_pairs_get_one_sentence_each(cora_run, tmp_path):
    import shutil

    with pytest.raises(RunLoadError, match="is not a saved run"):
        load_run(tmp_path / "nothing")
    saved = Path(json.loads(Path(cora_run["results_dir"], "run.json").read_text())["saved_model"])

    def copy(change):
        target = tmp_path / f"run-{len(list(tmp_path.iterdir()))}"
        shutil.copytree(saved, target)
        meta = json.loads((target / "config.json").read_text())
        change(meta, target)
        (target / "config.json").write_text(json.dumps(meta))
        return target

    with pytest.raises(RunLoadError, match="older recbole-cora"):
        load_run(copy(lambda meta, _: meta.pop("run")))
    with pytest.raises(RunLoadError, match="the data of .* changed since the run"):
        load_run(copy(lambda meta, _: meta["run"].update(split_fingerprint="0123456789abcdef")))
    with pytest.raises(RunLoadError, match="is not the LLM .* was trained with"):
        load_run(copy(lambda meta, _: meta["run"]["llm"].update(embedding_sum=1.5)))

    def truncate(meta, target):
        path = target / "trainable.safetensors"
        path.write_bytes(path.read_bytes()[:50])

    with pytest.raises(RunLoadError, match="truncated or not a safetensors file"):
        load_run(copy(truncate))

    def flip(meta, target):  # one bit of a weight: the file still parses, its sha256 does not match config.json's
        path = target / "trainable.safetensors"
        data = bytearray(path.read_bytes())
        data[-3] ^= 0x01
        path.write_bytes(bytes(data))

    with pytest.raises(RunLoadError, match="sha256 differs"):
        load_run(copy(flip))
    with pytest.raises(RunLoadError, match="only .* not \\['lora_rank'\\]"):
        load_run(saved, lora_rank=8)
    run = load_run(saved)
    # A run whose command line overrode one of its `model_options` (`--weight_decay=...` beside
    # `model_options: {CoRA: {weight_decay: 0.5}}`) recorded both: it rebuilds with what it trained with.
    trained = run.config["weight_decay"]

    def overridden(meta, _):
        meta["run"]["options"]["model_options"] = {"CoRA": {"weight_decay": 0.5}}
        meta["config"]["model_options"] = {"CoRA": {"weight_decay": 0.5}}

    assert load_run(copy(overridden)).config["weight_decay"] == trained != 0.5
    with pytest.raises(RunLoadError, match=r"1 item token\(s\) are in no file .*line 3: 'no-such-item'"):
        pairs = tmp_path / "pairs.tsv"
        pairs.write_text("user_id\titem_id\n196\t242\n196\tno-such-item\n")
        users, items, times, lines = read_pairs(pairs)
        run.predict_pairs(users, items, times, lines=lines)


def test_the_command_line_scores_a_pairs_file_and_recommends(cora_run, tmp_path):
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("196\t242\n186\t302\n22\t377\n196\t242\n")
    env_cmd = [sys.executable, str(ROOT / "run_recbole_cora.py")]
    done = subprocess.run(env_cmd + ["--predict", cora_run["results_dir"], "--pairs", str(pairs), "--out", "s.tsv",
                                     "--show_progress=False"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = (tmp_path / "s.tsv").read_text().splitlines()
    assert lines[0] == "user\titem\tscore\twarm\ttitle" and [line.split("\t")[:2] for line in lines[1:]] == [
        ["196", "242"], ["186", "302"], ["22", "377"], ["196", "242"]]
    assert lines[1] == lines[4] and "4 pairs scored by CoRA" in done.stdout
    run = load_run(cora_run["results_dir"])
    direct = run.predict_pairs(["196", "186", "22"], ["242", "302", "377"])
    assert [f"{s:.6f}" for s in direct["score"].tolist()] == [line.split("\t")[2] for line in lines[1:4]]
    done = subprocess.run(env_cmd + ["--recommend", cora_run["results_dir"], "--users", "196,186", "--topk", "3",
                                     "--candidates", "10", "--show_progress=False"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    table = [line for line in done.stdout.splitlines() if line.startswith("| 196 |") or line.startswith("| 186 |")]
    assert len(table) == 6 and (tmp_path / "recommendations.tsv").is_file()
    done = subprocess.run(env_cmd + ["--predict", cora_run["results_dir"]], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 2 and "--predict needs --pairs" in done.stderr


def test_a_next_item_run_recommends_after_the_user_s_whole_sequence(tmp_path):
    from helpers import SLICE_OPTIONS, ml100k_slice
    from test_next_item import SASREC

    path = ml100k_slice(tmp_path)
    result = run_recbole_cora("SASRec", "ml100k-slice", config_dict={**QUIET, **SLICE_OPTIONS, **SASREC, "data_path": path})
    run = load_run(result["results_dir"])
    again = run.evaluate("test")
    assert again["ndcg@10"] == result["test_result"]["ndcg@10"]
    user = str(run.dataset.field2id_token["user_id"][1])
    rows = run.recommend([user], k=5)
    assert [r["rank"] for r in rows] == [1, 2, 3, 4, 5] and rows[0]["score"] >= rows[-1]["score"]
    feat = run.dataset.inter_feat
    seen = set(feat["item_id"][feat["user_id"] == 1].tolist())
    assert not {run.dataset.field2token_id["item_id"][r["item"]] for r in rows} & seen


def _python_example(path, heading, placeholder, results_dir):
    """The first ```python block after ``heading`` in ``path``, with the run's folder in place of ``placeholder``."""
    text = (ROOT / path).read_text()
    section = text[text.index(heading):]
    code = section[section.index("```python\n") + 10: section.index("```\n", section.index("```python\n") + 10)]
    assert placeholder in code
    return code.replace(f'"{placeholder}"', repr(results_dir))


def test_the_readme_and_docs_examples_run(cora_run):
    namespace = {}
    code = _python_example("README.md", "## Using a trained run", "results/CoRA-ml-100k-<time>", cora_run["results_dir"])
    exec(compile(code, "README.md", "exec"), namespace)
    assert namespace["run"].kind == "llm"
    namespace = {}
    code = _python_example("docs/inference.md", "# Using a trained run", "results/CoRA-ml-100k-...", cora_run["results_dir"])
    exec(compile(code, "docs/inference.md", "exec"), namespace)
    assert namespace["config"]["model"] == "CoRA" and namespace["run"].kind == "llm"


@pytest.mark.parametrize("residual", [False, True])
def test_a_laser_run_loads_and_recommends_by_its_cosine(tmp_path, tiny_llm, residual):
    # with encoder_residual the gate fitted on valid after training is saved with the model and loaded with it
    from helpers import SLICE_OPTIONS, ml100k_slice

    options = {
        **QUIET, **SLICE_OPTIONS, "data_path": ml100k_slice(tmp_path), "llm_path": tiny_llm, "mformer_layers": 1,
        "mformer_width": 32, "mformer_heads": 2, "num_queries": 4, "num_experts": 2, "user_vector_size": 32,
        "history_len": 5, "stage1_epochs": 1, "stage2_epochs": 0, "train_rows_per_epoch": 32, "eval_rows": 30,
        "sequential_encoder_config": {"epochs": 1, "hidden_size": 16, "n_layers": 1, "n_heads": 1, "inner_size": 32},
        "encoder_residual": residual,
    }
    result = run_recbole_cora("Laser", "ml100k-slice", config_dict=options)
    run = load_run(result["results_dir"])
    assert run.evaluate("test")["ndcg@10"] == result["test_result"]["ndcg@10"]
    if residual:
        assert "residual.gate" in run.model.trainable_state_dict()  # saved and loaded with the weights
        assert float(run.model.residual.gate) == pytest.approx(result["test_result"]["residual_gate"], abs=1e-4)
    rows = run.recommend(["1", "2"], k=4)
    assert [r["user"] for r in rows] == ["1"] * 4 + ["2"] * 4 and all(r["title"] for r in rows)
    feat = run.dataset.inter_feat
    for token in ("1", "2"):
        uid = run.dataset.field2token_id["user_id"][token]
        seen = set(feat["item_id"][feat["user_id"] == uid].tolist())
        mine = [r for r in rows if r["user"] == token]
        assert not {run.dataset.field2token_id["item_id"][r["item"]] for r in mine} & seen
        assert [r["score"] for r in mine] == sorted((r["score"] for r in mine), reverse=True)


def test_a_loaded_run_whose_stage_folder_is_gone_is_refused(cora_run, tmp_path):
    import shutil

    from recbole_cora.runs import find_saved_model

    _, folder = find_saved_model(cora_run["results_dir"])
    copy = tmp_path / folder.name
    shutil.copytree(folder, copy)
    saved = json.loads((copy / "config.json").read_text())
    gone = str(tmp_path / "cf-stage-deleted")
    saved["run"]["options"]["cf_stage_dir"] = saved["config"]["cf_stage_dir"] = gone
    (copy / "config.json").write_text(json.dumps(saved))
    with pytest.raises(RunLoadError, match=r"the stage folder '.*cf-stage-deleted' \(cf_stage_dir\) this run read is gone"):
        load_run(copy)


def _saved_copy(cora_run, tmp_path, change):
    import shutil

    from recbole_cora.runs import find_saved_model

    _, folder = find_saved_model(cora_run["results_dir"])
    copy = tmp_path / folder.name
    shutil.copytree(folder, copy)
    saved = json.loads((copy / "config.json").read_text())
    change(saved)
    (copy / "config.json").write_text(json.dumps(saved))
    return copy


def test_a_run_saved_before_an_option_existed_loads_with_the_value_that_rebuilds_it(cora_run, tmp_path):
    # A run of a version without answer_head: its config.json lacks the key; it rebuilds with ADDED_OPTIONS' value
    def older(saved):
        for key in ("answer_head", "answer_head_lr"):
            saved["config"].pop(key)

    run = load_run(_saved_copy(cora_run, tmp_path, older))
    assert run.config["answer_head"] == "frozen" and run.model.answer_head is None
    assert run.evaluate("test")["auc"] == cora_run["test_result"]["auc"]


def test_a_run_whose_default_changed_since_rebuilds_with_what_it_trained_with(cora_run, tmp_path):
    # lora_rank 4, as though 4 had been the default then: the record has no lora_rank, config.json says 4
    def default_then(saved):
        saved["run"]["options"].pop("lora_rank")
        assert saved["config"]["lora_rank"] == 4

    run = load_run(_saved_copy(cora_run, tmp_path, default_then))
    assert run.config["lora_rank"] == 4
    assert run.evaluate("test")["auc"] == cora_run["test_result"]["auc"]


def test_a_missing_option_no_later_version_declared_is_refused_by_name(cora_run, tmp_path):
    def unknown(saved):
        saved["run"]["options"].pop("query_width")
        saved["config"].pop("query_width")

    with pytest.raises(RunLoadError, match=r"without the option\(s\) \['query_width'\]"):
        load_run(_saved_copy(cora_run, tmp_path, unknown))


def test_every_option_added_since_the_first_saved_runs_says_how_older_runs_rebuild():
    # tests/option_keys.txt: the package's options when ADDED_OPTIONS was last brought up to date. An option added
    # since must be in ADDED_OPTIONS, with the value that rebuilds a run saved before it (then add it to the file).
    from recbole_cora.checks import package_options
    from recbole_cora.runs.loading import ADDED_OPTIONS

    listed = set(Path(__file__).with_name("option_keys.txt").read_text().split())
    new = sorted(set(package_options()) - listed - set(ADDED_OPTIONS))
    assert not new, f"options {new} are new: add each to runs.loading.ADDED_OPTIONS and to tests/option_keys.txt"
    assert set(ADDED_OPTIONS) <= set(package_options())


def test_a_tallrec_run_of_before_the_answer_head_rebuilds_frozen_though_today_s_default_is_trainable():
    # the ADDED_OPTIONS value is what the earlier version computed, not today's default (TALLRec's: trainable)
    from recbole_cora.checkpoint import plain_config
    from recbole_cora.config import Config
    from recbole_cora.runs.loading import _rebuild_options

    record = {"options": {"model": "TALLRec", "dataset": "ml-100k", "task": "labeled"}}
    saved = plain_config(Config(config_dict=record["options"], check=False))
    assert saved["answer_head"] == "trainable"
    for key in ("answer_head", "answer_head_lr"):
        saved.pop(key)
    saved["lora_rank"] = 4  # a default that changed since: the run's own value wins
    options = _rebuild_options(record, saved)
    assert options["answer_head"] == "frozen" and options["answer_head_lr"] is None and options["lora_rank"] == 4
    assert Config(config_dict=options, check=False)["answer_head"] == "frozen"
