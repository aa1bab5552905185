"""A killed run resumes to the same result; checkpoints survive a kill at any instant."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file

from recbole_cora import checkpoint as ckpt
from conftest import ROOT, SMALL_CORA

SCRIPT = ROOT / "run_recbole_cora.py"


def write_config(folder, tiny_llm, **extra):
    options = {
        **SMALL_CORA, "model": "CoRA", "dataset": "ml-100k", "llm_path": tiny_llm, "epochs": 3,
        "train_rows_per_epoch": 320, "checkpoint_steps": 2, "metric_decimal_place": 8,
        "cf_checkpoint_dir": str(folder / "cf"), **extra,
    }
    path = folder / "run.yaml"
    path.write_text(yaml.safe_dump(options))
    return path


def run(config, *args, wait=True):
    cmd = [sys.executable, str(SCRIPT), "--config_files", str(config), *args]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if wait:
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        return done
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)


def results(results_dir):
    """The metrics of every row of the results table (timings left out)."""
    (found,) = Path(results_dir).glob("*/results.json")
    return {model: {k: v for k, v in values.items() if not k.endswith("_seconds")}
            for model, values in json.loads(found.read_text()).items()}


def best_model(checkpoint_dir):
    (folder,) = [p for p in Path(checkpoint_dir).glob("CoRA-*") if p.is_dir() and p.suffix != ".resume"]
    return load_file(str(folder / "trainable.safetensors"))


def test_a_run_killed_mid_epoch_resumes_to_the_same_metrics_and_weights(tmp_path, tiny_llm):
    config = write_config(tmp_path, tiny_llm)
    run(config, "--checkpoint_dir=whole", "--results_dir=results_whole")  # also trains the CF stage, shared below

    process = run(config, "--checkpoint_dir=killed", "--results_dir=results_killed", wait=False)
    deadline = time.time() + 300
    latest = None
    while time.time() < deadline and process.poll() is None:
        pointers = list(Path("killed").glob("CoRA-*.resume/LATEST"))
        if pointers and pointers[0].read_text().strip():
            latest = pointers[0].read_text().strip()
            break
        time.sleep(0.01)
    assert process.poll() is None, f"the run ended before it could be killed: {process.stderr.read()[-2000:]}"
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL
    state = ckpt.read_state(ckpt.latest_state(next(Path("killed").glob("CoRA-*.resume"))))
    assert not state["finished"] and state["batches"] > 0, state  # killed inside an epoch, not at its end
    assert not list(Path("results_killed").glob("*/results.json"))
    print(f"killed after {latest}: epoch {state['epoch']}, batch {state['batches']}")

    resumed = run(config, "--checkpoint_dir=killed", "--results_dir=results_killed", "--resume", "--state=INFO")
    assert f"epoch {state['epoch']}, {state['batches']} batch(es) done" in resumed.stdout + resumed.stderr
    whole, again = results("results_whole"), results("results_killed")
    assert again == whole
    a, b = best_model("whole"), best_model("killed")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # the last weights and optimizer moments too (the best model may be an early epoch's)
    for name in ("trainable", "optimizer"):
        a, b = (load_file(str(ckpt.latest_state(next(Path(d).glob("CoRA-*.resume"))) / f"{name}.safetensors"))
                for d in ("whole", "killed"))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name


def test_resume_refuses_other_options_and_says_which(tmp_path, tiny_llm):
    config = write_config(tmp_path, tiny_llm, epochs=1, train_rows_per_epoch=64)
    run(config)
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--config_files", str(config), "--resume", "--learning_rate=0.5"],
        capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=600,
    )
    assert done.returncode == 2
    assert "learning_rate: 0.001 there, 0.5 here" in done.stderr and "--resume" in done.stderr
    assert "Traceback" not in done.stderr


def test_resume_without_a_resumable_run_says_so(tmp_path, tiny_llm):
    config = write_config(tmp_path, tiny_llm)
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--config_files", str(config), "--resume"],
        capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=600,
    )
    assert done.returncode == 2 and "no resumable CoRA run in checkpoint_dir 'saved'" in done.stderr


def test_publishing_a_folder_never_leaves_no_complete_copy(tmp_path):
    folder = tmp_path / "model"
    for version in (1, 2):
        tmp = ckpt.temporary_dir(folder)
        save_file({"w": torch.full((2,), float(version))}, str(tmp / "trainable.safetensors"))
        ckpt.publish_dir(tmp, folder)
    assert load_file(str(folder / "trainable.safetensors"))["w"][0] == 2
    # a run killed between publish_dir's two renames: the new copy is not in place, the old one is aside
    tmp = ckpt.temporary_dir(folder)
    save_file({"w": torch.full((2,), 3.0)}, str(tmp / "trainable.safetensors"))
    os.replace(folder, folder.with_name("model.old"))
    assert ckpt.resolve_dir(folder) == folder.with_name("model.old")
    assert load_file(str(ckpt.resolve_dir(folder) / "trainable.safetensors"))["w"][0] == 2
    ckpt.publish_dir(tmp, folder)  # the next save cleans up
    assert not folder.with_name("model.old").exists() and ckpt.resolve_dir(folder) == folder


def test_a_truncated_checkpoint_is_named_in_the_error(tmp_path):
    path = tmp_path / "trainable.safetensors"
    save_file({"w": torch.zeros(100)}, str(path))
    path.write_bytes(path.read_bytes()[:60])
    with pytest.raises(ckpt.CheckpointError, match="trainable.safetensors' could not be read .*truncated"):
        ckpt.load_tensors(path, "train again")
    path.write_text("not a checkpoint at all")
    with pytest.raises(ckpt.CheckpointError, match="truncated or not a safetensors file"):
        ckpt.load_tensors(path, "train again")


def test_optimizer_and_rng_round_trip_without_pickle():
    import random

    import numpy as np

    params = [torch.nn.Parameter(torch.randn(3, 2)), torch.nn.Parameter(torch.randn(4))]
    optimizer = torch.optim.AdamW(params, lr=0.1, weight_decay=0.01)
    for _ in range(3):
        optimizer.zero_grad()
        sum((p ** 2).sum() for p in params).backward()
        optimizer.step()
    tensors, meta = ckpt.optimizer_to_files(optimizer)
    meta = json.loads(json.dumps(meta))  # what state.json stores
    other = torch.optim.AdamW([torch.nn.Parameter(p.detach().clone()) for p in params], lr=0.5)
    other.load_state_dict(ckpt.optimizer_from_files(tensors, meta))
    assert other.param_groups[0]["lr"] == 0.1
    for a, b in zip(optimizer.state.values(), other.state.values()):
        assert all(torch.equal(a[k], b[k]) for k in a)

    rng_tensors, rng_meta = ckpt.rng_to_files()
    rng_meta = json.loads(json.dumps(rng_meta))
    first = (torch.rand(3), np.random.rand(3), random.random())
    ckpt.restore_rng(rng_tensors, rng_meta)
    second = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(first[0], second[0]) and (first[1] == second[1]).all() and first[2] == second[2]


def test_resume_refuses_a_state_made_on_other_data(tmp_path, tiny_llm):
    from recbole_cora import run_recbole_cora

    options = {**SMALL_CORA, "llm_path": tiny_llm, "train_rows_per_epoch": 32, "eval_rows": 32}
    run_recbole_cora("CoRA", "ml-100k", config_dict=options)
    (resume_dir,) = Path("saved").glob("CoRA-*.resume")
    state_file = ckpt.latest_state(resume_dir) / "state.json"
    state = json.loads(state_file.read_text())
    assert state["split_fingerprint"] and state["finished"]
    fingerprint = state["split_fingerprint"]
    state["split_fingerprint"] = "0123456789ab"  # as if the .inter file had changed since
    state_file.write_text(json.dumps(state))
    with pytest.raises(ckpt.CheckpointError, match="another split of the data .*0123456789ab"):
        run_recbole_cora("CoRA", "ml-100k", config_dict={**options, "resume": "latest"})
    state.update(split_fingerprint=fingerprint, processes=2)  # as if saved by a run of two processes
    state_file.write_text(json.dumps(state))
    with pytest.raises(ckpt.CheckpointError, match=r"was saved by 2 process\(es\); this run has 1. Resume with the same"):
        run_recbole_cora("CoRA", "ml-100k", config_dict={**options, "resume": "latest"})


def test_resume_of_a_recbole_model_says_it_resumes_llm_models_only():
    from recbole_cora import run_recbole_cora

    with pytest.raises(ValueError, match="--resume continues LLM recommenders .* LightGCN is a RecBole model: run it "
                                         "again without --resume"):
        run_recbole_cora("LightGCN", "ml-100k", config_dict={"state": "ERROR", "resume": "latest", "epochs": 1})


def test_a_next_item_run_killed_mid_epoch_resumes_to_the_same_metrics_and_weights(tmp_path, tiny_llm):
    """Laser: stage 1's item matrix comes back with the resume state (it is not recomputed mid-epoch with the
    weights of the kill), then stage 2 runs as in the uninterrupted run."""
    from helpers import SLICE_OPTIONS, ml100k_slice

    options = {
        **SLICE_OPTIONS, "model": "Laser", "dataset": "ml100k-slice", "data_path": ml100k_slice(tmp_path),
        "llm_path": tiny_llm, "cf_checkpoint_dir": str(tmp_path / "stages"), "state": "WARNING", "show_progress": False,
        "mformer_layers": 2, "mformer_width": 32, "mformer_heads": 2, "num_queries": 4, "num_experts": 4,
        "user_vector_size": 32, "history_len": 5, "stage1_epochs": 2, "stage2_epochs": 1, "train_rows_per_epoch": 160,
        "train_batch_size": 16, "eval_batch_size": 32, "eval_rows": 40, "checkpoint_steps": 2, "metric_decimal_place": 8,
        "sequential_encoder_config": {"epochs": 2, "hidden_size": 16, "n_layers": 1, "n_heads": 1, "inner_size": 32},
    }
    config = tmp_path / "laser.yaml"
    config.write_text(yaml.safe_dump(options))
    os.chdir(tmp_path)
    run(config, "--checkpoint_dir=whole", "--results_dir=results_whole")  # also trains the BERT4Rec stage

    process = run(config, "--checkpoint_dir=killed", "--results_dir=results_killed", wait=False)
    deadline = time.time() + 300
    while time.time() < deadline and process.poll() is None:
        pointers = list(Path("killed").glob("Laser-*-step1.resume/LATEST"))
        if pointers and pointers[0].read_text().strip():
            break
        time.sleep(0.01)
    assert process.poll() is None, f"the run ended before it could be killed: {process.stderr.read()[-2000:]}"
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    state = ckpt.read_state(ckpt.latest_state(next(Path("killed").glob("Laser-*-step1.resume"))))
    assert not state["finished"] and state["batches"] > 0, state

    resumed = run(config, "--checkpoint_dir=killed", "--results_dir=results_killed", "--resume", "--state=INFO")
    assert f"epoch {state['epoch']}, {state['batches']} batch(es) done" in resumed.stdout + resumed.stderr
    assert results("results_killed") == results("results_whole")
    for name in ("trainable", "optimizer"):  # stage 2's last state, item matrix included
        a, b = (load_file(str(ckpt.latest_state(next(Path(d).glob("Laser-*-step2.resume"))) / f"{name}.safetensors"))
                for d in ("whole", "killed"))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    assert "item_matrix" in load_file(str(next(Path("killed").glob("Laser-*-step2")) / "trainable.safetensors"))
