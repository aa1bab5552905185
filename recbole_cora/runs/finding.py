"""Finding a saved run and reading what it recorded, before anything is rebuilt.

A run is found by what it wrote: an LLM model's folder (``saved/CoRA-<time>/``: ``trainable.safetensors`` and
``config.json``; a multi-stage run's last stage folder, ``saved/CoLLM-<time>-step2``, or its base name), a RecBole
model's checkpoint (``saved/<Model>-<time>.pth``) or the run's results folder (its ``run.json`` names the
checkpoint).
"""

import json
import os
from pathlib import Path

from recbole_cora.checkpoint import resolve_dir, stage_folders

RUN_FILE = "run.json"  # in a results folder: where the run's trained model is


class RunLoadError(ValueError):
    """A saved run that cannot be loaded as it is; the message says why and what to do."""


def write_run_file(folder, saved_model):
    """``run.json`` in a results folder: the trained model it came from."""
    Path(folder, RUN_FILE).write_text(json.dumps({"saved_model": os.path.abspath(str(saved_model))}, indent=2))


def find_saved_model(run):
    """``(kind, path)``: ``("llm", folder)`` or ``("recbole", .pth file)`` for what ``run`` names."""
    path = Path(str(run))
    if path.is_dir() and (path / RUN_FILE).is_file():  # a results folder
        path = _read_run_file(path / RUN_FILE)
    stages = stage_folders(path) if not path.exists() else {}
    if stages:  # a multi-stage run named by its base: its last stage holds the final model
        path = list(stages.values())[-1]
    path = resolve_dir(path)
    if path.is_dir() and (path / "trainable.safetensors").is_file():
        return "llm", path
    if path.is_file() and path.suffix == ".pth":
        return "recbole", path
    if path.is_dir() and path.name.endswith(".resume"):
        raise RunLoadError(f"'{run}' is a resume folder: load the run's model folder ('{path.name[:-7]}').")
    raise RunLoadError(
        f"'{run}' is not a saved run: give an LLM model's folder (saved/CoRA-<time>/ with trainable.safetensors), a "
        "RecBole model's checkpoint (saved/LightGCN-<time>.pth) or a results folder with run.json."
    )


def _read_run_file(path):
    """The saved model a results folder's ``run.json`` names: a string path to something that exists."""
    try:
        saved = json.loads(path.read_text()).get("saved_model")
    except (OSError, ValueError, AttributeError) as err:
        raise RunLoadError(f"'{path}' could not be read as {{\"saved_model\": PATH}} ({err}); it is damaged: load "
                           "the saved model itself (saved/<Model>-<time>).") from err
    if not isinstance(saved, str) or not saved:
        raise RunLoadError(f"'{path}' names no saved model (its saved_model is {saved!r}): load the saved model itself.")
    target = Path(saved) if os.path.isabs(saved) else path.parent / saved
    if not (target.exists() or stage_folders(target)):
        raise RunLoadError(f"'{path}' names '{saved}', which does not exist: the saved model was moved or deleted.")
    return target


def check_run_record(record, where):
    """A run record (``config.json``'s or a checkpoint's ``run``) holds what rebuilds the run, with the right types."""
    if not isinstance(record, dict) or not isinstance(record.get("options"), dict):
        raise RunLoadError(f"'{where}' holds no run record with options (a JSON object under 'run'): it was not "
                           "written by recbole-cora, or was edited; train the run again.")
    options = record["options"]
    wrong = [key for key in ("model", "dataset") if not isinstance(options.get(key), str)]
    if not isinstance(record.get("split_fingerprint"), (str, type(None))):
        wrong.append("split_fingerprint")
    if not isinstance(record.get("llm"), (dict, type(None))):
        wrong.append("llm")
    if wrong:
        raise RunLoadError(f"'{where}': the run record's {wrong} are missing or of the wrong type; it was edited or "
                           "damaged: train the run again.")


def read_saved_config(folder):
    """An LLM run folder's ``config.json``: the resolved config it trained with and its run record."""
    path = folder / "config.json"
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise RunLoadError(f"'{path}' could not be read ({err}): the run folder is incomplete; train again.") from err
    if not isinstance(saved, dict) or not isinstance(saved.get("config", {}), dict):
        raise RunLoadError(f"'{path}' is not a run's config (a JSON object with 'config' and 'run'): train again.")
    if "run" not in saved:
        raise RunLoadError(
            f"'{folder}' was saved by an older recbole-cora that did not record the options it was run with: it "
            "cannot be rebuilt. Train it again (or continue it with --resume) to save a loadable run."
        )
    return saved
