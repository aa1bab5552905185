"""Loading never runs code: every way a file reaches recbole-cora is handed a pickle that would create a file, and
every loader is fed damaged files; each gets one sentence, nothing runs, nothing is written."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import run_recbole_cora as cli
from recbole_cora import load_data_and_model, load_run, run_recbole_cora
from recbole_cora.checkpoint import CheckpointError
from recbole_cora.config import Config
from recbole_cora.runs import RunLoadError
from recbole_cora.model.encoders import CFCheckpointError, FrozenSequentialRecommender, read_stage_meta
from recbole_cora.recbole_files import (CorruptCheckpointError, UntrustedCheckpointError, read_foreign_checkpoint,
                                        read_recbole_model, sidecars)

from conftest import QUIET, ROOT
from helpers import SLICE_OPTIONS, ml100k_slice, write_hostile_checkpoint

# What the command line turns into one `error: ...` line (run_recbole_cora.py's except clauses).
ONE_SENTENCE = (ValueError, KeyError, FileNotFoundError, UntrustedCheckpointError, CorruptCheckpointError)
HOSTILE_KINDS = [("open", 2), ("open", 4), ("recbole", 2), ("recbole", 4), ("bare", 2)]


def listing(folder):
    return sorted((str(p.relative_to(folder)), p.stat().st_size) for p in Path(folder).rglob("*"))


@pytest.fixture(scope="module")
def lightgcn_run(tmp_path_factory):
    """A RecBole model's run trained through the plugin: saved/LightGCN-<time>.pth and its safetensors + JSON pair."""
    with pytest.MonkeyPatch.context() as patch:  # RecBole writes saved/ and log/ where it runs
        patch.chdir(tmp_path_factory.mktemp("lightgcn"))
        result = run_recbole_cora("LightGCN", "ml-100k", config_dict={
            **QUIET, "epochs": 2, "eval_rows": 300, "time_window": ["1998-03-01", "1998-05-01"]})
    pth = Path(json.loads(Path(result["results_dir"], "run.json").read_text())["saved_model"])
    return result, pth


def copy_run(pth, where):
    """The run's .pth with its pair, copied into ``where`` (a fresh folder)."""
    where.mkdir(parents=True, exist_ok=True)
    for path in (pth, *sidecars(pth)):
        shutil.copy(path, where / path.name)
    return where / pth.name


# ------------------------------------------------------------------------------------------------ hostile pickles
def test_the_hostile_pickles_do_run_code_when_unpickled(tmp_path):
    """The payloads of these tests are real: unpickled as RecBole's torch.load would, each creates its marker."""
    for kind, protocol in HOSTILE_KINDS:
        marker = tmp_path / f"marker-{kind}-{protocol}"
        path = write_hostile_checkpoint(tmp_path / f"{kind}-{protocol}.pth", marker, kind, protocol)
        try:
            torch.load(path, weights_only=False)
        except RuntimeError:  # the bare pickle: torch reads its first object as a magic number, and runs it
            pass
        assert marker.exists(), (kind, protocol)


@pytest.mark.parametrize("kind,protocol", HOSTILE_KINDS)
def test_predict_recommend_load_run_and_load_data_and_model_never_unpickle_a_handed_pth(tmp_path, kind, protocol, capsys):
    marker = tmp_path / "marker"
    path = write_hostile_checkpoint(tmp_path / "model.pth", marker, kind, protocol)
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("196\t242\n")
    assert cli.main(["--predict", str(path), "--pairs", str(pairs)]) == 2
    assert cli.main(["--recommend", str(path), "--users", "196"]) == 2
    err = capsys.readouterr().err
    assert err.count("error: ") == 2 and "Traceback" not in err
    # A pickle naming only RecBole's functions is read weights-only with inert records in their place: nothing runs,
    # and what comes back does not fit the model. Any other is refused with the sentence that names the conversion.
    inert = (kind, protocol) == ("recbole", 2)
    expected = (RunLoadError, "does not fit LightGCN") if inert else (UntrustedCheckpointError, "--trust_checkpoint")
    assert expected[1] in err and (inert or f"--trust_checkpoint {path}" in err and "does not unpickle" in err)
    for load in (load_run, load_data_and_model):
        with pytest.raises(expected[0], match=expected[1]):
            load(path)
    results = tmp_path / "results"  # a results folder whose run.json names the file
    results.mkdir()
    (results / "run.json").write_text(json.dumps({"saved_model": str(path)}))
    with pytest.raises(expected[0], match=expected[1]):
        load_run(results)
    assert not marker.exists()
    assert not sidecars(path)[0].exists() and not sidecars(path)[1].exists()  # nothing written


def test_a_run_whose_pth_was_swapped_for_a_hostile_one_loads_from_its_pair(lightgcn_run, tmp_path):
    result, pth = lightgcn_run
    copied = copy_run(pth, tmp_path / "saved")
    marker = tmp_path / "marker"
    write_hostile_checkpoint(copied, marker, "open")
    run = load_run(copied)
    assert run.evaluate("test")["auc"] == result["test_result"]["auc"]
    assert not marker.exists()


def test_recbole_s_own_pth_is_read_weights_only_with_its_config_as_inert_records(tmp_path):
    config = Config("BPR", "ml-100k", config_dict={**QUIET, "embedding_size": 8})
    path = tmp_path / "BPR.pth"
    torch.save({"config": config, "state_dict": {"w": torch.ones(2)}, "epoch": 3}, path)  # as RecBole's trainer does
    with pytest.raises(Exception, match="[Ww]eights only load failed"):
        torch.load(path)  # what RecBole 1.2.1's own load_best_model / resume_checkpoint call on current torch
    saved = read_foreign_checkpoint(path)
    assert torch.equal(saved["state_dict"]["w"], torch.ones(2)) and saved["epoch"] == 3
    assert saved["options"]["model"] == "BPR" and saved["options"]["embedding_size"] == 8
    with pytest.raises(RunLoadError, match="saved by RecBole or an older recbole-cora"):
        load_run(path)  # it recorded no run: refused, with the reason


def test_trust_checkpoint_converts_one_file_the_user_names(lightgcn_run, tmp_path, capsys):
    """An older recbole-cora's .pth (pickle protocol 4, no pair) is refused with the sentence, then converted by
    --trust_checkpoint, then loads with the same weights."""
    result, pth = lightgcn_run
    old = copy_run(pth, tmp_path / "saved")
    checkpoint = torch.load(old, weights_only=False)  # the test trusts its own file
    torch.save(checkpoint, old, pickle_protocol=4)
    for path in sidecars(old):
        path.unlink()
    with pytest.raises(UntrustedCheckpointError, match="cannot be read weights-only.*--trust_checkpoint"):
        load_run(old)
    assert cli.main(["--trust_checkpoint", str(old)]) == 0
    assert "unpickled as you asked" in capsys.readouterr().out
    run = load_run(old)
    assert run.evaluate("test")["auc"] == result["test_result"]["auc"]
    assert cli.main(["--trust_checkpoint", str(tmp_path / "missing.pth")]) == 2


def test_a_config_string_is_read_as_a_literal_never_evaluated(lightgcn_run, tmp_path):
    """RecBole's Config evals every string option; a saved run's options would run on load."""
    marker = tmp_path / "marker"
    code = f"open({str(marker)!r}, 'w')"
    config = Config("BPR", "ml-100k", config_dict={**QUIET, "note": code, "learning_rate": "1e-3",
                                                   "eval_args": "{'split': {'RS': [0.8, 0.1, 0.1]}}"})
    assert config["note"] == code and config["learning_rate"] == 0.001 and config["eval_args"]["split"]["RS"][0] == 0.8
    assert not marker.exists()
    _, pth = lightgcn_run
    copied = copy_run(pth, tmp_path / "saved")
    record = json.loads(sidecars(copied)[1].read_text())
    record["run"]["options"]["note"] = code
    sidecars(copied)[1].write_text(json.dumps(record))
    load_run(copied)
    assert not marker.exists()


# ------------------------------------------------------------------------------------------------ stages
@pytest.fixture(scope="module")
def sequence_stage(tmp_path_factory, tiny_llm):
    """A BERT4Rec stage of the next-item task on a slice of ml-100k, and the dataset it was trained for."""
    from recbole.data import data_preparation

    from recbole_cora.stages.sequence import run_sequence_stage
    from recbole_cora.utils import create_dataset

    root = tmp_path_factory.mktemp("seq")
    options = {**QUIET, **SLICE_OPTIONS, "llm_path": tiny_llm, "data_path": ml100k_slice(root / "data"),
               "cf_checkpoint_dir": str(root / "stages"), "history_len": 5,
               "sequential_encoder_config": {"epochs": 1, "hidden_size": 16, "n_layers": 1, "n_heads": 1,
                                             "inner_size": 32, "train_batch_size": 256}}
    config = Config("Laser", "ml100k-slice", config_dict=options)
    dataset = create_dataset(config)
    train, _, _ = data_preparation(config, dataset)
    return Path(run_sequence_stage(config, dataset)), train._dataset, options


def test_a_stage_is_saved_as_safetensors_and_json_and_read_from_them(sequence_stage, tmp_path):
    stage, dataset, _ = sequence_stage
    names = {p.name for p in stage.iterdir()}
    assert {"recbole_model.safetensors", "recbole_model.json", "encoder.json"} <= names
    copied = tmp_path / "stage"
    shutil.copytree(stage, copied)
    marker = tmp_path / "marker"
    write_hostile_checkpoint(copied / "recbole_model.pth", marker, "recbole")
    encoder = FrozenSequentialRecommender.from_stage(copied, dataset)  # read from the pair: the .pth is never opened
    reference = FrozenSequentialRecommender.from_stage(stage, dataset)
    ids = torch.arange(1, 6)
    assert torch.equal(encoder.item_embeddings(ids), reference.item_embeddings(ids))
    assert not marker.exists()


def test_a_stage_folder_with_a_hostile_pth_and_no_pair_is_refused_by_every_stage_option(sequence_stage, tmp_path):
    from recbole.data import data_preparation

    from recbole_cora.model.llm_recommender.laser import Laser
    from recbole_cora.utils import create_dataset

    stage, dataset, options = sequence_stage
    copied = tmp_path / "stage"
    shutil.copytree(stage, copied)
    for path in sidecars(copied / "recbole_model.pth"):
        path.unlink()
    marker = tmp_path / "marker"
    write_hostile_checkpoint(copied / "recbole_model.pth", marker, "open")
    with pytest.raises(UntrustedCheckpointError, match="--trust_checkpoint .*recbole_model.pth"):
        FrozenSequentialRecommender.from_stage(copied, dataset)
    config = Config("Laser", "ml100k-slice", config_dict={**options, "sequence_stage_dir": str(copied)})
    train, _, _ = data_preparation(config, create_dataset(config))
    with pytest.raises(UntrustedCheckpointError):
        Laser(config, train._dataset)  # the option a user sets to a shared stage
    assert not marker.exists()


def test_an_older_stage_is_refused_then_converted_by_trust_checkpoint(sequence_stage, tmp_path):
    stage, dataset, _ = sequence_stage
    copied = tmp_path / "stage"
    shutil.copytree(stage, copied)
    pth = copied / "recbole_model.pth"
    torch.save(torch.load(pth, weights_only=False), pth, pickle_protocol=4)  # as older versions wrote it
    for path in sidecars(pth):
        path.unlink()
    with pytest.raises(UntrustedCheckpointError, match="cannot be read weights-only"):
        FrozenSequentialRecommender.from_stage(copied, dataset)
    assert cli.main(["--trust_checkpoint", str(pth)]) == 0
    reference = FrozenSequentialRecommender.from_stage(stage, dataset)
    ids = torch.arange(1, 6)
    assert torch.equal(FrozenSequentialRecommender.from_stage(copied, dataset).item_embeddings(ids),
                       reference.item_embeddings(ids))


def test_a_cf_stage_never_reads_a_pth(tmp_path, tiny_llm):
    """The CF stage (a copied saved/cf/ folder) is read from embeddings.safetensors alone."""
    from recbole_cora.model.encoders import FrozenCFEncoder
    from recbole_cora.stages import run_cf_stage
    from recbole_cora.utils import create_dataset

    config = Config("CoRA", "ml-100k", config_dict={
        **QUIET, "llm_path": tiny_llm, "time_window": ["1998-03-01", "1998-05-01"], "cf_checkpoint_dir": str(tmp_path),
        "cf_config": {"epochs": 1, "embedding_size": 8}})
    dataset = create_dataset(config)
    from recbole.data import data_preparation

    train, _, _ = data_preparation(config, dataset)
    stage = Path(run_cf_stage(config, dataset))
    marker = tmp_path / "marker"
    write_hostile_checkpoint(stage / "recbole_model.pth", marker, "open")
    for path in sidecars(stage / "recbole_model.pth"):
        path.unlink()
    FrozenCFEncoder.from_stage(stage, train._dataset)
    assert not marker.exists()


def test_resume_never_unpickles_what_its_state_folder_holds(tmp_path, tiny_llm):
    import yaml

    from conftest import SMALL_CORA

    options = {**SMALL_CORA, "model": "CoRA", "dataset": "ml-100k", "llm_path": tiny_llm, "epochs": 1,
               "train_rows_per_epoch": 64, "checkpoint_steps": 2, "cf_checkpoint_dir": str(tmp_path / "cf")}
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(options))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    script = str(ROOT / "run_recbole_cora.py")
    done = subprocess.run([sys.executable, script, "--config_files", str(config)], capture_output=True, text=True,
                          env=env, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    (resume,) = (tmp_path / "saved").glob("CoRA-*.resume")
    (state,) = [p for p in resume.iterdir() if p.name.startswith("state-")]
    marker = tmp_path / "marker"
    for name in ("trainable.safetensors", "optimizer.safetensors"):
        write_hostile_checkpoint(state / name, marker, "open")
    done = subprocess.run([sys.executable, script, "--config_files", str(config), "--resume"], capture_output=True,
                          text=True, env=env, timeout=600, cwd=tmp_path)
    assert done.returncode == 2 and "truncated or not a safetensors file" in done.stderr, done.stderr[-2000:]
    assert "Traceback" not in done.stderr and not marker.exists()


# ------------------------------------------------------------------------------------------------ damaged files
def test_a_damaged_pair_gets_one_sentence_and_nothing_is_written(lightgcn_run, tmp_path):
    _, pth = lightgcn_run
    cases = {
        "truncated": lambda t, j: t.write_bytes(t.read_bytes()[:80]),
        "header flipped": lambda t, j: t.write_bytes(t.read_bytes()[:10] + b"\x00" + t.read_bytes()[11:]),
        "data flipped": lambda t, j: t.write_bytes(t.read_bytes()[:-5] + bytes([t.read_bytes()[-5] ^ 0xFF]) + t.read_bytes()[-4:]),
        "json missing": lambda t, j: j.unlink(),
        "tensors missing": lambda t, j: t.unlink(),
        "json truncated": lambda t, j: j.write_text(j.read_text()[:40]),
        "json of another epoch": lambda t, j: j.write_text(json.dumps({**json.loads(j.read_text()), "epoch": 99})),
        "json a list": lambda t, j: j.write_text("[1, 2]"),
        "options without model": lambda t, j: j.write_text(json.dumps({**json.loads(j.read_text()), "options": {}})),
        "run record of the wrong type": lambda t, j: j.write_text(json.dumps({**json.loads(j.read_text()), "run": 3})),
    }
    for name, damage in cases.items():
        copied = copy_run(pth, tmp_path / name.replace(" ", "-"))
        damage(*sidecars(copied))
        before = listing(copied.parent)
        with pytest.raises(ONE_SENTENCE) as err:
            load_run(copied)
        message = str(err.value)
        assert message and "\n" not in message and str(copied.parent) in message, (name, message)
        assert listing(copied.parent) == before, name


def test_a_pth_that_is_not_a_checkpoint_gets_one_sentence(tmp_path):
    for name, content in {"text": b"not a checkpoint", "random": os.urandom(300), "empty": b""}.items():
        path = tmp_path / f"{name}.pth"
        path.write_bytes(content)
        with pytest.raises((CorruptCheckpointError, RunLoadError), match=f"{name}.pth"):
            load_run(path)
    plain = tmp_path / "plain.pth"
    torch.save([1, 2, 3], plain)  # a torch file, but no checkpoint
    with pytest.raises((CorruptCheckpointError, RunLoadError), match="holds no state_dict"):
        load_run(plain)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)
KEYS = st.sampled_from(["format", "epoch", "options", "run", "other_parameter", "config", "saved_model", "model",
                        "dataset", "user_tokens", "item_tokens", "split_fingerprint", "llm"])
RECORDS = st.dictionaries(KEYS, JSON, max_size=6) | JSON


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(record=RECORDS)
def test_any_json_in_any_loader_file_gets_one_sentence_and_writes_nothing(tmp_path, lightgcn_run, sequence_stage, record):
    """The JSON each loader reads (a RecBole run's pair record, an LLM run's config.json, a results folder's
    run.json, a stage's encoder.json), replaced by arbitrary JSON: our error or a load, never a crash or a write."""
    _, pth = lightgcn_run
    stage, dataset, _ = sequence_stage
    root = tmp_path / f"case-{len(list(tmp_path.iterdir()))}"
    text = json.dumps(record)
    pair = copy_run(pth, root / "pair")
    sidecars(pair)[1].write_text(text)
    llm = root / "llm" / "CoRA-x"
    llm.mkdir(parents=True)
    from safetensors.torch import save_file  # the LLM folder: an empty trainable.safetensors, the fuzzed config.json

    save_file({}, str(llm / "trainable.safetensors"))
    (llm / "config.json").write_text(text)
    results = root / "results"
    results.mkdir()
    (results / "run.json").write_text(text)
    meta = root / "stage"
    meta.mkdir()
    (meta / "encoder.json").write_text(text)
    before = listing(root)
    for load in (lambda: load_run(pair), lambda: load_run(llm), lambda: load_run(results)):
        try:
            load()
        except ONE_SENTENCE + (CheckpointError,) as err:
            assert str(err)
    try:
        read_stage_meta(meta, "encoder.json", dataset, "run_sequence_stage")
    except CFCheckpointError as err:
        assert str(err)
    assert listing(root) == before


def test_read_recbole_model_names_a_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        read_recbole_model(tmp_path / "missing.pth")


def test_a_loaded_run_never_takes_trust_remote_code_from_its_files(lightgcn_run, tmp_path):
    _, pth = lightgcn_run
    copied = copy_run(pth, tmp_path / "saved")
    record = json.loads(sidecars(copied)[1].read_text())
    record["run"]["options"]["trust_remote_code"] = True
    sidecars(copied)[1].write_text(json.dumps(record))
    with pytest.raises(RunLoadError, match="trust_remote_code: True.*say so yourself"):
        load_run(copied)
    assert load_run(copied, trust_remote_code=True).config["trust_remote_code"] is True


def test_a_resume_folder_s_pointer_and_state_are_checked_before_use(tmp_path):
    from recbole_cora import checkpoint as ckpt

    resume = tmp_path / "CoRA-x.resume"
    state = resume / "state-e0-b2"
    state.mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "state.json").write_text("{}")
    (resume / "LATEST").write_text("../elsewhere")
    with pytest.raises(CheckpointError, match="not a state folder"):
        ckpt.latest_state(resume)
    (resume / "LATEST").write_text("state-e0-b2")
    for text in ("[]", json.dumps({"epoch": "1"}), json.dumps({"epoch": True})):
        (state / "state.json").write_text(text)
        with pytest.raises(CheckpointError, match="is not a resume state"):
            ckpt.read_state(ckpt.latest_state(resume))


# ------------------------------------------------------------------------------------------------ inference flags
def test_inference_flags_are_checked_before_anything_loads(tmp_path, capsys):
    missing = str(tmp_path / "no-run")
    assert cli.main(["--recommend", missing, "--users", "1", "--topk", "-3"]) == 2
    err = capsys.readouterr().err
    assert "--topk -3" in err and "is not a saved run" not in err  # refused before the run is looked at
    assert cli.main(["--recommend", missing, "--users", " , ", "--pool", "0"]) == 2
    err = capsys.readouterr().err
    assert "--recommend needs --users" in err and "--pool 0" in err
    assert cli.main(["--predict", missing, "--pairs", str(tmp_path / "none.tsv")]) == 2
    assert "--pairs" in capsys.readouterr().err
    assert cli.main(["--predict", missing, "--recommend", missing, "--pairs", "x"]) == 2
    assert "two jobs" in capsys.readouterr().err
    assert cli.main(["--recommend", missing, "--users", "1", "--out", str(tmp_path / "no" / "r.tsv")]) == 2
    assert "its folder does not exist" in capsys.readouterr().err
