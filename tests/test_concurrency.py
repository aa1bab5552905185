"""Several runs at once in one folder: a shared stage or cache is built by one of them while the others wait, a lock
dies with the process that held it, and two runs started in the same second keep two results folders and two
checkpoints."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import torch

from recbole_cora.io import build_lock, lock_file, reserve
from recbole_cora.quick_start import run_recbole_cora
from recbole_cora.model.encoders import CF_STAGE_FILE
from recbole_cora.stages import run_cf_stage
from recbole_cora.stages.cf import CF_KEY_OPTIONS, cf_stage_config
from recbole_cora.stages.runner import stage_dir
from recbole_cora.utils import create_dataset

from conftest import QUIET
from test_cf_stage import config_for, small_data

TESTS = Path(__file__).parent
REPO = TESTS.parent

STAGE_SCRIPT = """
import logging, sys
sys.path.insert(0, {tests!r})
logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(message)s")
from test_cf_stage import config_for
from recbole_cora.model.encoders import CF_STAGE_FILE
from recbole_cora.stages import run_cf_stage
from recbole_cora.stages.cf import CF_KEY_OPTIONS, cf_stage_config
from recbole_cora.stages.runner import stage_dir
from recbole_cora.utils import create_dataset
config = config_for({data!r})
dataset = create_dataset(config)
dataset.build()
{before}
stage = run_cf_stage(config, dataset)
import hashlib
from safetensors import safe_open
from recbole_cora.model.encoders import CF_STAGE_FILE
with safe_open(str(stage / CF_STAGE_FILE), "pt") as f:
    fingerprint = f.metadata()["split_fingerprint"]
print("STAGE", stage, fingerprint, hashlib.sha256((stage / CF_STAGE_FILE).read_bytes()).hexdigest(), flush=True)
"""


def stage_process(tmp_path, data, before=""):
    script = STAGE_SCRIPT.format(tests=str(TESTS), data=str(data), before=textwrap.dedent(before))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-c", script], cwd=tmp_path, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def test_four_runs_that_need_one_untrained_stage_train_it_once(tmp_path):
    data = small_data(tmp_path)
    runs = [stage_process(tmp_path, data) for _ in range(4)]
    outputs = [run.communicate(timeout=600)[0] for run in runs]
    assert [run.returncode for run in runs] == [0] * 4, "\n".join(outputs)
    trained = sum(out.count("LightGCN stage: training on") for out in outputs)
    assert trained == 1, "\n".join(outputs)
    seen = [line.split()[1:] for out in outputs for line in out.splitlines() if line.startswith("STAGE ")]
    assert len(seen) == 4 and len({tuple(s) for s in seen}) == 1  # one folder, one fingerprint, one file
    folder, fingerprint, _ = seen[0]
    config = config_for(data)
    dataset = create_dataset(config)
    dataset.build()
    assert fingerprint == dataset.fingerprint
    assert run_cf_stage(config, dataset) == Path(folder)  # and this process finds it done
    stage = tmp_path / folder
    leftovers = [p.name for p in stage.parent.rglob("*") if ".tmp-" in p.name]
    assert leftovers == []


def test_a_lock_left_by_a_killed_run_does_not_block_the_next(tmp_path):
    data = small_data(tmp_path)
    config = config_for(data)
    dataset = create_dataset(config)
    dataset.build()
    stage = tmp_path / stage_dir(cf_stage_config(config), dataset.fingerprint, CF_KEY_OPTIONS)
    holder = stage_process(tmp_path, data, before=f"""
        from recbole_cora.io import build_lock
        with build_lock({str(stage)!r}):
            print("HOLDING", flush=True)
            import time; time.sleep(600)
    """)
    lines = iter(holder.stdout.readline, "")
    assert any(line.strip() == "HOLDING" for line in lines)  # killed while it holds the stage's lock
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=60)
    assert lock_file(stage).is_file()  # the file stays; the lock on it died with the process
    done = {}
    worker = threading.Thread(target=lambda: done.setdefault("stage", run_cf_stage(config, dataset)), daemon=True)
    worker.start()
    worker.join(timeout=300)
    assert done.get("stage") == stage.relative_to(tmp_path), "the lock of the killed run blocked the stage"
    assert (stage / CF_STAGE_FILE).is_file()


def test_a_run_waits_for_the_lock_then_reuses_what_the_holder_built(tmp_path):
    target = tmp_path / "shared" / "thing"
    events = []

    def other():
        with build_lock(target):
            events.append("other in")
            time.sleep(0.5)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text("built")
            events.append("other out")

    thread = threading.Thread(target=other)
    thread.start()
    while not events:
        time.sleep(0.01)
    with build_lock(target):  # a second FileLock object: it waits like another process would
        events.append("this in")
        assert target.read_text() == "built"
    thread.join()
    assert events == ["other in", "other out", "this in"]


def test_reserve_gives_each_claim_its_own_name(tmp_path):
    first = reserve(tmp_path / "CoRA-ml-100k-Dec-06-2026_18-00-00")
    second = reserve(tmp_path / "CoRA-ml-100k-Dec-06-2026_18-00-00")
    assert first.name == "CoRA-ml-100k-Dec-06-2026_18-00-00" and second.name == "CoRA-ml-100k-Dec-06-2026_18-00-00-2"
    assert first.is_dir() and second.is_dir()
    pth = reserve(tmp_path / "BPR-Dec-06-2026_18-00-00", ".pth", folder=False)
    again = reserve(tmp_path / "BPR-Dec-06-2026_18-00-00", ".pth", folder=False)
    assert (again.name, (tmp_path / "BPR-Dec-06-2026_18-00-00-2.pth").is_file()) == ("BPR-Dec-06-2026_18-00-00-2", True)
    steps = [reserve(tmp_path / "CoLLM-T", "-step1") for _ in range(2)]
    assert [p.name for p in steps] == ["CoLLM-T", "CoLLM-T-2"] and (tmp_path / "CoLLM-T-2-step1").is_dir()
    assert pth.with_suffix(".pth").is_file()


def test_two_runs_started_in_the_same_second_keep_two_results_folders_and_two_checkpoints(monkeypatch):
    import recbole.trainer.trainer as recbole_trainer

    import recbole_cora.quick_start as quick_start

    stamp = "Dec-06-2026_18-00-00"
    monkeypatch.setattr(quick_start, "get_local_time", lambda: stamp)
    monkeypatch.setattr(recbole_trainer, "get_local_time", lambda: stamp)
    options = {**QUIET, "epochs": 1, "train_batch_size": 4096, "eval_batch_size": 100000}
    outs = [run_recbole_cora(model="BPR", dataset="ml-100k", config_dict={**options, "seed": seed}) for seed in (1, 2)]
    folders = [Path(out["results_dir"]) for out in outs]
    assert folders[0] != folders[1]
    for out, folder in zip(outs, folders):
        saved = json.loads((folder / "results.json").read_text())
        assert saved["BPR"]["auc"] == out["test_result"]["auc"]
        assert (folder / "results.md").read_text().strip() == out["table"].strip()
    assert outs[0]["test_result"]["auc"] != outs[1]["test_result"]["auc"]  # two seeds: two tables, none overwritten
    checkpoints = sorted(p.name for p in Path("saved").glob("BPR-*.pth"))
    assert checkpoints == [f"BPR-{stamp}-2.pth", f"BPR-{stamp}.pth"]


def test_two_processes_adding_to_one_token_cache_lose_none_of_the_others_prompts(tiny_llm):
    from test_cora import build, first_batch

    _, first, (train, _, _) = build(tiny_llm)
    _, second, _ = build(tiny_llm)  # read the (empty) cache before the first one saved
    batch = train.collate_fn(list(range(64)))
    head, tail = batch[list(range(32))], batch[list(range(32, 64))]
    head_ids, tail_ids = first.prompts.batch(head)[0], second.prompts.batch(tail)[0]
    first.save_prompt_caches()
    second.save_prompt_caches()  # before: it wrote its own prompts over the first one's
    _, third, _ = build(tiny_llm)
    third.prompts.tokenizer = None  # nothing may be tokenized: both halves come from the file
    assert torch.equal(third.prompts.batch(head)[0], head_ids) and torch.equal(third.prompts.batch(tail)[0], tail_ids)
