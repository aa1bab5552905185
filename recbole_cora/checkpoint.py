"""Checkpoints of LLM recommenders: the trainable parameters, and the state a killed run resumes from.

Nothing here is pickled. Tensors go to safetensors files, everything else to JSON:

* a *model folder* (``saved/CoRA-<time>/``): ``trainable.safetensors`` + ``config.json``. It is the best
  model so far; ``load_best_model`` reads it;
* a *resume folder* (``saved/CoRA-<time>.resume/``): a ``LATEST`` file naming the newest complete state
  folder ``state-e<epoch>-b<batch>/``, which holds ``trainable.safetensors``, ``optimizer.safetensors``,
  ``rng-<rank>.safetensors`` (one per process) and ``state.json`` (position in the data, early-stopping
  state, scheduler and optimizer hyper-parameters, the resolved config and the split fingerprint).

Every folder is written under a temporary name and published by a rename, so a run killed at any
instant leaves the previous complete checkpoint readable (tests/test_resume.py).
"""

import json
import os
import random
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from recbole_cora.io import atomic_path

# Options that may differ between a run and its resumption: where and how it runs, not what it learns.
RESUME_FREE_OPTIONS = {
    "resume", "show_progress", "state", "device", "gpu_id", "use_gpu", "local_rank", "world_size", "nproc",
    "offset", "ip", "port", "checkpoint_dir", "cf_stage_dir", "reclora_stage_dir", "results_dir", "data_path", "log_wandb",
    "wandb_project", "checkpoint_steps", "single_spec", "eval_batch_size", "device_map", "llm_max_memory", "llm_offload_dir",
}


class CheckpointError(ValueError):
    """A checkpoint or resume state that cannot be used (missing, truncated, or made for another run)."""


# ---------------------------------------------------------------------------------------- folders
def publish_dir(tmp, folder):
    """Make the complete folder ``tmp`` appear as ``folder``, replacing an older one.

    A directory cannot be renamed over a non-empty one, so the old folder is first renamed aside
    (``folder.old``); ``resolve_dir`` falls back to it if the run dies between the two renames."""
    tmp, folder = Path(tmp), Path(folder)
    old = folder.with_name(folder.name + ".old")
    if old.exists():
        shutil.rmtree(old)
    if folder.exists():
        os.replace(folder, old)
    os.replace(tmp, folder)
    if old.exists():
        shutil.rmtree(old)


def resolve_dir(folder):
    """``folder``, or the complete older copy ``publish_dir`` set aside if the run died mid-publish."""
    folder = Path(folder)
    old = folder.with_name(folder.name + ".old")
    if not folder.exists() and old.exists():
        return old
    return folder


def temporary_dir(folder):
    folder = Path(folder)
    tmp = folder.with_name(f".{folder.name}.tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    return tmp


def plain_config(config, as_text=False):
    """The resolved config as JSON values (what ``config.json`` and ``state.json`` record); a value JSON cannot
    hold (a device, an enum) is left out, or with ``as_text`` written as its text (the results' config.json)."""
    out = {}
    for key, value in config.final_config_dict.items():
        try:
            json.dumps(value)
        except (TypeError, ValueError):
            if not as_text:
                continue
            value = json.loads(json.dumps(value, default=str))
        out[key] = value
    return out


# ---------------------------------------------------------------------------------------- what rebuilds a run
# Options naming files or folders: kept absolute in a saved run, so that it loads from any working directory.
PATH_OPTIONS = (
    "data_path", "checkpoint_dir", "cf_checkpoint_dir", "llm_cache_dir", "token_cache_dir", "llm_path", "results_dir",
    "cf_stage_dir", "reclora_stage_dir", "sequence_stage_dir", "collm_stage1_dir", "llm_offload_dir",
)


def saved_options(config):
    """What a run records to be rebuilt: the options it was given (files, dict and --key=value merged), paths made
    absolute, the model, dataset and task, and every stage folder it read."""
    options = {}
    for key, value in config.external_config_dict.items():
        try:
            json.dumps(value)
        except (TypeError, ValueError):
            continue
        options[key] = value
    options.update({"model": config["model"], "dataset": config["dataset"], "task": config["task"]})
    for key in PATH_OPTIONS:
        value = config[key] if key in config else None
        if key == "data_path":  # RecBole joined the dataset name on; the option is the folder above
            value = os.path.dirname(os.path.normpath(str(config["data_path"])))
        if isinstance(value, str) and value and os.path.exists(value):
            options[key] = os.path.abspath(value)
    options.pop("resume", None)
    return options


def llm_identity(llm):
    """What identifies the frozen LLM's weights: dtype, shape and the sum of its input embeddings (float64), which
    differ between checkpoints, fine-tunes and random seeds."""
    embeddings = llm.get_input_embeddings().weight
    identity = {"name_or_path": str(llm.config.name_or_path), "dtype": str(embeddings.dtype), "shape": list(embeddings.shape)}
    if embeddings.device.type != "meta":
        identity["embedding_sum"] = float(embeddings.detach().double().sum())
    return identity


def run_record(config, model=None, fingerprint=None):
    """The ``run`` entry of a saved model's ``config.json`` (and of a RecBole checkpoint)."""
    record = {"options": saved_options(config), "split_fingerprint": fingerprint, "format": 1}
    llm = getattr(model, "llm", None)
    if llm is not None:
        record["llm"] = llm_identity(llm)
    return record


# ---------------------------------------------------------------------------------------- tensors
def save_tensors(tensors, path, metadata=None):
    save_file({k: t.detach().cpu().contiguous() for k, t in tensors.items()}, str(path), metadata=metadata)


def load_tensors(path, what):
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"'{path}' is missing: {what}.")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(
            f"'{path}' could not be read ({err}): it is truncated or not a safetensors file. Delete it ({what})."
        ) from err


def save_trainable(model, folder, config, state, fingerprint=None):
    """The model folder: ``trainable.safetensors`` and ``config.json`` (the resolved config, the training state and
    ``run``: what rebuilds the run, see ``run_record``), published atomically."""
    tmp = temporary_dir(folder)
    save_tensors(model.trainable_state_dict(), tmp / "trainable.safetensors", metadata={"model": type(model).__name__})
    saved = {"config": plain_config(config), "state": state, "run": run_record(config, model, fingerprint),
             "trainable_sha256": file_sha256(tmp / "trainable.safetensors")}
    (tmp / "config.json").write_text(json.dumps(saved, indent=2, default=str))
    publish_dir(tmp, folder)


def file_sha256(path):
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _recorded_sha256(config_file):
    """The sha256 a model folder's config.json recorded for its trainable.safetensors (None: a resume state's
    folder, or a folder saved before the hash was recorded)."""
    try:
        value = json.loads(Path(config_file).read_text()).get("trainable_sha256")
    except (OSError, ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None


def load_trainable(model, folder):
    folder = resolve_dir(folder)
    path = folder / "trainable.safetensors"
    if not path.is_file():
        raise FileNotFoundError(f"no saved model at '{path}': train first, or point `model_file` at a saved run folder.")
    tensors = load_tensors(path, "the saved model is unusable; train again")
    recorded = _recorded_sha256(folder / "config.json")
    if recorded is not None and recorded != file_sha256(path):  # a flipped bit the safetensors parser cannot see
        raise CheckpointError(f"'{path}' is not the file '{folder / 'config.json'}' was written with (its sha256 "
                              "differs): it was damaged or replaced; train again.")
    expected = set(model.trainable_state_dict())
    if set(tensors) != expected:
        raise CheckpointError(
            f"'{path}' does not fit this model: missing {sorted(expected - set(tensors))[:3]}, "
            f"unexpected {sorted(set(tensors) - expected)[:3]}. Was it saved with other options?"
        )
    model.load_state_dict(tensors, strict=False)


# ---------------------------------------------------------------------------------------- optimizer
def optimizer_to_files(optimizer):
    """(tensors, json) of ``optimizer.state_dict()``: per-parameter tensors flattened, the rest as JSON."""
    state = optimizer.state_dict()
    tensors, scalars = {}, {}
    for index, values in state["state"].items():
        for key, value in values.items():
            if torch.is_tensor(value):
                tensors[f"{index}.{key}"] = value
            else:
                scalars[f"{index}.{key}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def optimizer_from_files(tensors, meta):
    state = {}
    for flat, value in list(tensors.items()) + list(meta["scalars"].items()):
        index, key = flat.split(".", 1)
        state.setdefault(int(index), {})[key] = value
    return {"state": state, "param_groups": meta["param_groups"]}


# ---------------------------------------------------------------------------------------- RNG
def rng_to_files():
    """This process's random states: torch (CPU and every CUDA device), numpy and Python."""
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda.{i}"] = s
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    tensors["numpy"] = torch.from_numpy(np.asarray(keys, dtype=np.int64))
    version, internal, gauss_next = random.getstate()
    meta = {"numpy": [kind, int(pos), int(has_gauss), float(gauss)], "python": [version, list(internal), gauss_next]}
    return tensors, meta


def restore_rng(tensors, meta):
    torch.set_rng_state(tensors["torch"])
    cuda = [tensors[k] for k in sorted(k for k in tensors if k.startswith("cuda."))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    kind, pos, has_gauss, gauss = meta["numpy"]
    np.random.set_state((kind, tensors["numpy"].numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = meta["python"]
    random.setstate((version, tuple(internal), gauss_next))


# ---------------------------------------------------------------------------------------- resume folders
def resume_dir_of(model_folder):
    return Path(f"{model_folder}.resume")


def latest_state(resume_dir):
    """The newest complete state folder of ``resume_dir`` (named in ``LATEST``)."""
    resume_dir = Path(resume_dir)
    pointer = resume_dir / "LATEST"
    if not pointer.is_file():
        raise CheckpointError(
            f"'{resume_dir}' holds no complete resume state (no LATEST file): the run was killed before its "
            "first checkpoint. Start it again without --resume."
        )
    name = pointer.read_text().strip()
    if not name.startswith("state-") or "/" in name or "\\" in name or ".." in name:
        raise CheckpointError(f"'{pointer}' names '{name[:80]}', not a state folder of '{resume_dir}': it was edited or "
                              f"damaged; delete '{resume_dir}' and start again without --resume.")
    state = resume_dir / name
    if not (state / "state.json").is_file():
        raise CheckpointError(f"resume state '{state}' named in '{pointer}' is missing or incomplete; delete '{resume_dir}'.")
    return state


# What a resume state's state.json must hold, and of which JSON types (``LLMTrainer._save_resume_state``).
STATE_FIELDS = {"epoch": int, "batches": int, "finished": bool, "cur_step": int, "processes": int, "model_file": str,
                "config": dict, "optimizer": dict}


def read_state(state_dir):
    path = Path(state_dir) / "state.json"
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise CheckpointError(f"'{path}' could not be read ({err}): delete its resume folder and start again.") from err
    wrong = ([key for key, kind in STATE_FIELDS.items() if not isinstance(state.get(key), kind)
              or (kind is int and isinstance(state.get(key), bool))] if isinstance(state, dict) else ["the whole file"])
    if not wrong and not (isinstance(state["optimizer"].get("param_groups"), list)
                          and isinstance(state["optimizer"].get("scalars"), dict)):
        wrong = ["optimizer"]
    if wrong:
        raise CheckpointError(f"'{path}' is not a resume state ({', '.join(wrong)} missing or of the wrong type): it was "
                              "edited or damaged; delete its resume folder and start again without --resume.")
    return state


def config_differences(saved, current):
    """Options (other than RESUME_FREE_OPTIONS) whose values differ between two plain configs, as a sentence
    part ('learning_rate: 0.001 there, 0.5 here, ...'); empty when they agree."""
    keys = (set(saved) | set(current)) - RESUME_FREE_OPTIONS
    diff = [k for k in sorted(keys) if saved.get(k) != current.get(k)]
    return ", ".join(f"{k}: {saved.get(k)!r} there, {current.get(k)!r} here" for k in diff[:5])


def write_pointer(resume_dir, name):
    with atomic_path(Path(resume_dir) / "LATEST") as tmp:
        tmp.write_text(name)


def find_resume_run(config, model_name):
    """The model folder (without ``.resume``) of the run to resume, from ``config['resume']``.

    ``resume: latest`` (the ``--resume`` flag): the newest resume folder of this model in
    ``checkpoint_dir`` whose resolved config matches this run's; ``resume: <path>``: that run (its model
    folder, its ``.resume`` folder or one of its state folders)."""
    wanted = config["resume"]
    if wanted in (True, "latest", "True", "true"):
        root = Path(config["checkpoint_dir"])
        candidates = sorted(
            (p for p in root.glob(f"{model_name}-*.resume") if (p / "LATEST").is_file()),
            key=lambda p: (p / "LATEST").stat().st_mtime, reverse=True,
        )
        current = plain_config(config)
        rejected = []
        for resume_dir in candidates:
            saved = read_state(latest_state(resume_dir))["config"]
            diff = config_differences(saved, current)
            if not diff:
                return _strip_stage(str(resume_dir)[: -len(".resume")])
            rejected.append((resume_dir, diff))
        if rejected:
            where, diff = rejected[0]
            raise CheckpointError(
                f"--resume: the newest {model_name} run in '{root}' ({where}) was started with other options ({diff}). "
                "Resume with the same options, or name the run with --resume=PATH after fixing them."
            )
        raise CheckpointError(
            f"--resume: no resumable {model_name} run in checkpoint_dir '{root}'. Start without --resume."
        )
    path = Path(str(wanted))
    if path.name.startswith("state-"):
        path = path.parent
    if path.name.endswith(".resume"):
        path = path.with_name(path.name[: -len(".resume")])
    if not resume_dir_of(path).is_dir():
        raise CheckpointError(f"resume: '{wanted}' is not a run with a resume folder ('{resume_dir_of(path)}' is missing).")
    return _strip_stage(str(path))


def _strip_stage(base):
    """A multi-stage run's folders are ``<base>-step1`` / ``-step2``: the base names the whole run."""
    return str(split_stage_folder(base)[0])


# ------------------------------------------------------------------------------------------- stage folders
STAGE_SUFFIX = "-step"  # a multi-stage run (CoLLM, Laser) saves each training stage in <base>-step<stage>


def stage_folder(base, stage):
    """The folder of training stage ``stage`` of the run named ``base`` (None: a one-stage run's folder, ``base``)."""
    return str(base) if stage is None else f"{base}{STAGE_SUFFIX}{stage}"


def split_stage_folder(path):
    """(the run's base, the stage) of a stage folder ``<base>-step<stage>`` (or of its ``.old`` copy: ``resolve_dir``);
    (``path``, None) for any other."""
    path = Path(str(path))
    name = path.name[:-len(".old")] if path.name.endswith(".old") else path.name
    base, sep, stage = name.rpartition(STAGE_SUFFIX)
    if sep and base and stage.isdigit():
        return path.with_name(base), stage
    return path, None


def stage_folders(base):
    """``{stage: folder}`` of the stage folders a multi-stage run named ``base`` saved, in stage order, each resolved
    (``resolve_dir``); {} for a one-stage run."""
    base = Path(str(base))
    found = {}
    if base.parent.is_dir():
        for path in base.parent.iterdir():
            owner, stage = split_stage_folder(path)
            if stage is not None and owner.name == base.name:
                found[stage] = resolve_dir(stage_folder(owner, stage))
    return dict(sorted(found.items(), key=lambda item: int(item[0])))
