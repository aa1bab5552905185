"""RecBole models' saved files, read without running code.

RecBole's trainer pickles its checkpoint (``<Model>-<time>.pth``: its ``Config`` object, the state dict, the
optimizer), and unpickling runs whatever the file asks for. recbole-cora reads no such pickle:

* beside every ``.pth`` it writes (a RecBole model's run, a frozen stage's ``recbole_model.pth``) it writes
  ``<stem>.safetensors`` (the state dict, and the model's ``other_parameter`` tensors) and ``<stem>.json`` (the
  options that rebuild the model, the run record, the epoch); the run's best model, a stage reused by a later run
  and a run loaded for inference read those two. The ``.pth`` stays for RecBole's own tools;
* a ``.pth`` without them (RecBole's own, a colleague's, one of an older recbole-cora) is read with
  ``torch.load(weights_only=True)``, every RecBole or YAML class it names replaced by an inert record (nothing of
  theirs is called): its tensors and plain values come back. A file that names anything else, or that torch's
  weights-only reader cannot parse (pickle protocol 4, as older recbole-cora versions wrote), is refused with the
  sentence that says how to convert it: ``python run_recbole_cora.py --trust_checkpoint FILE``, typed by the user
  for that one file, unpickles it once and writes the two files beside it.
"""

import json
import pickle
from pathlib import Path

import torch

from recbole_cora.checkpoint import file_sha256
from recbole_cora.io import atomic_path

FORMAT = 1
# Modules whose classes a RecBole checkpoint names (its Config, the enums in it, the model class and the YAML
# loader class it keeps): read as inert records. Nothing else may appear in a foreign checkpoint.
RECORD_MODULES = ("recbole.", "recbole_cora.", "yaml.")


class UntrustedCheckpointError(RuntimeError):
    """A pickle that cannot be read without running code; the message says how to convert it."""


class CorruptCheckpointError(RuntimeError):
    """A checkpoint that is truncated, not a checkpoint, or whose two files do not belong together."""


def sidecars(pth):
    """``(<stem>.safetensors, <stem>.json)``: the files that stand for ``pth``."""
    pth = Path(pth)
    return pth.with_suffix(".safetensors"), pth.with_suffix(".json")


def _plain(values):
    """The JSON-able entries of a dict (a device, an enum or a class is left out)."""
    out = {}
    for key, value in (values or {}).items():
        try:
            json.dumps(value)
        except (TypeError, ValueError):
            continue
        out[str(key)] = value
    return out


# ------------------------------------------------------------------------------------------------ writing
def write_recbole_model(pth, model, config, run=None, epoch=None):
    """The safetensors + JSON pair beside ``pth`` for ``model`` (a RecBole model) trained under ``config``.

    The tensors are written first and the JSON last (each atomically), and both carry the epoch, so a run killed
    between the two leaves a pair that ``read_recbole_model`` refuses rather than mixes."""
    from recbole_cora.checkpoint import saved_options

    other = model.other_parameter() or {}
    if not isinstance(other, dict):
        other = {}
    write_pair(pth, model.state_dict(), other, saved_options(config), run, epoch)


def write_pair(pth, state_dict, other, options, run=None, epoch=None):
    from safetensors.torch import save_file

    tensors_path, json_path = sidecars(pth)
    tensors = {f"state.{k}": v.detach().cpu().clone().contiguous() for k, v in state_dict.items() if torch.is_tensor(v)}
    other_plain = {}
    for key, value in other.items():
        if torch.is_tensor(value):
            tensors[f"other.{key}"] = value.detach().cpu().clone().contiguous()
        else:
            try:
                json.dumps(value)
            except (TypeError, ValueError):
                continue  # not a tensor, not a plain value: RecBole recomputes such caches (restore_user_e, ...)
            other_plain[key] = value
    stamp = str(epoch if epoch is not None else -1)
    with atomic_path(tensors_path) as tmp:
        save_file(tensors, str(tmp), metadata={"format": str(FORMAT), "epoch": stamp})
    record = {"format": FORMAT, "epoch": int(stamp), "tensors_sha256": file_sha256(tensors_path), "options": options,
              "run": run, "other_parameter": other_plain}
    with atomic_path(json_path) as tmp:
        tmp.write_text(json.dumps(record, indent=1, default=str))


# ------------------------------------------------------------------------------------------------ reading
class SavedRecBoleModel(dict):
    """What a RecBole checkpoint holds, as plain values: ``state_dict``, ``other_parameter``, ``options`` (what
    rebuilds its Config), ``run`` (recbole-cora's run record, or None), ``epoch`` and ``source``."""


def read_recbole_model(pth, map_location="cpu"):
    """``pth``'s model, from its safetensors + JSON pair, or read weights-only if it has none (module docstring)."""
    pth = Path(pth)
    tensors_path, json_path = sidecars(pth)
    if tensors_path.is_file() or json_path.is_file():
        return _read_pair(pth, map_location)
    if not pth.is_file():
        raise FileNotFoundError(f"checkpoint '{pth}' does not exist.")
    return read_foreign_checkpoint(pth, map_location)


def _read_pair(pth, map_location):
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    tensors_path, json_path = sidecars(pth)
    for path in (tensors_path, json_path):
        if not path.is_file():
            raise CorruptCheckpointError(
                f"'{path}' is missing beside '{sidecars(pth)[1 - (path == json_path)].name}': the run that wrote "
                "them was stopped between the two; train again (or delete both to read the .pth weights-only).")
    try:
        record = json.loads(json_path.read_text())
    except (OSError, ValueError) as err:
        raise CorruptCheckpointError(f"'{json_path}' could not be read ({err}): it is truncated; train again.") from err
    problems = _record_problems(record)
    if problems:
        raise CorruptCheckpointError(f"'{json_path}' is not a checkpoint record of recbole-cora: {problems}.")
    try:
        with safe_open(str(tensors_path), framework="pt") as f:
            metadata = f.metadata() or {}
        tensors = load_file(str(tensors_path), device=str(map_location) if map_location else "cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise CorruptCheckpointError(
            f"'{tensors_path}' could not be read ({err}): it is truncated or not a safetensors file; train again."
        ) from err
    if file_sha256(tensors_path) != record["tensors_sha256"]:
        raise CorruptCheckpointError(
            f"'{tensors_path}' is not the file '{json_path.name}' was written with (its sha256 differs): it was "
            "damaged, replaced, or the run was stopped between the two; train again.")
    if str(metadata.get("epoch")) != str(record["epoch"]):
        raise CorruptCheckpointError(
            f"'{tensors_path}' (epoch {metadata.get('epoch')}) and '{json_path}' (epoch {record['epoch']}) were not "
            "written together: the run was stopped between them; train again.")
    state = {k[len("state."):]: v for k, v in tensors.items() if k.startswith("state.")}
    other = {k[len("other."):]: v for k, v in tensors.items() if k.startswith("other.")}
    other.update(record["other_parameter"])
    return SavedRecBoleModel(state_dict=state, other_parameter=other or None, options=record["options"],
                             run=record["run"], epoch=record["epoch"], source=str(tensors_path))


def rebuild_config(checkpoint, config_class):
    """The model's Config, rebuilt by ``config_class`` (the run's own: ``recbole_cora.config.Config``) from the
    options its checkpoint recorded (never unpickled)."""
    options = {**checkpoint["options"], "state": "WARNING", "show_progress": False}
    try:
        return config_class(model=options["model"], dataset=options["dataset"], config_dict=options, check=False)
    except Exception as err:  # options that do not make a Config: a hand-edited or foreign record
        raise CorruptCheckpointError(
            f"'{checkpoint['source']}': the options it recorded do not rebuild its model ({type(err).__name__}: "
            f"{err}).") from err


def _record_problems(record):
    if not isinstance(record, dict):
        return f"it holds a {type(record).__name__}, not an object"
    expected = {"format": int, "epoch": int, "tensors_sha256": str, "options": dict, "other_parameter": dict}
    wrong = [key for key, kind in expected.items()
             if not isinstance(record.get(key), kind) or isinstance(record.get(key), bool)]
    if record.get("run") is not None and not isinstance(record["run"], dict):
        wrong.append("run")
    if wrong:
        return f"{', '.join(wrong)} missing or of the wrong type"
    if record["format"] > FORMAT:
        return f"format {record['format']} is newer than this recbole-cora reads ({FORMAT}); update recbole-cora"
    options = record["options"]
    if not all(isinstance(options.get(key), str) for key in ("model", "dataset")):
        return "its options name no model and dataset"
    return ""


class _Record:
    """An inert stand-in for a class a foreign checkpoint names: built without calling that class."""

    def __init__(self, *args, **kwargs):
        self.args = args


def _inert(name):
    return type(name.rsplit(".", 1)[-1], (_Record,), {"__module__": "recbole_cora.recbole_files.inert",
                                                     "qualified_name": name})


def _refusal(pth, why):
    return UntrustedCheckpointError(
        f"'{pth}' {why}: recbole-cora does not unpickle it, as unpickling can run code. If you trust where it came "
        f"from, convert it once with `python run_recbole_cora.py --trust_checkpoint {pth}`: that writes "
        f"'{sidecars(pth)[0].name}' and '{sidecars(pth)[1].name}' beside it, which are read from then on."
    )


def read_foreign_checkpoint(pth, map_location="cpu"):
    """A ``.pth`` recbole-cora did not write beside a safetensors + JSON pair, read weights-only."""
    pth = Path(pth)
    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(str(pth))
    except pickle.UnpicklingError as err:  # e.g. protocol 4's FRAME: torch's weights-only reader cannot parse it
        raise _refusal(pth, f"cannot be read weights-only ({err})") from err
    except Exception as err:  # not a torch zip file: a bare pickle, truncated, or no checkpoint at all
        with open(pth, "rb") as f:
            if f.read(1) == b"\x80":  # a pickle's first opcode (PROTO)
                raise _refusal(pth, "is a bare pickle, not a torch checkpoint") from err
        raise CorruptCheckpointError(
            f"'{pth}' is not a readable checkpoint ({type(err).__name__}: {err}): it is truncated or not a RecBole "
            "checkpoint.") from err
    unknown = [name for name in names if not name.startswith(RECORD_MODULES)]
    if unknown:
        raise _refusal(pth, f"names {unknown[:3]} (a RecBole checkpoint holds only tensors and RecBole's records)")
    try:
        with torch.serialization.safe_globals([(_inert(name), name) for name in names]):
            checkpoint = torch.load(str(pth), map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        raise _refusal(pth, f"cannot be read weights-only ({str(err).splitlines()[-1] if str(err) else err})") from err
    except Exception as err:
        raise CorruptCheckpointError(
            f"'{pth}' could not be read ({type(err).__name__}: {err}): it is truncated or not a RecBole checkpoint."
        ) from err
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("state_dict"), dict):
        raise CorruptCheckpointError(f"'{pth}' holds no state_dict: it is not a RecBole checkpoint.")
    config = checkpoint.get("config")
    options = _plain(getattr(config, "external_config_dict", None) if isinstance(config, _Record) else None)
    final = getattr(config, "final_config_dict", None) if isinstance(config, _Record) else None
    for key in ("model", "dataset"):
        if isinstance(final, dict) and isinstance(final.get(key), str):
            options.setdefault(key, final[key])
    other = checkpoint.get("other_parameter")
    run = checkpoint.get("run")
    return SavedRecBoleModel(
        state_dict={k: v for k, v in checkpoint["state_dict"].items() if torch.is_tensor(v)},
        other_parameter={k: v for k, v in other.items() if torch.is_tensor(v) or v is None} if isinstance(other, dict) else None,
        options=options, run=run if isinstance(run, dict) else None,
        epoch=checkpoint.get("epoch") if isinstance(checkpoint.get("epoch"), int) else -1, source=str(pth))


def convert_checkpoint(pth):
    """``--trust_checkpoint FILE``: unpickle ``pth`` (the user vouched for it) and write its safetensors + JSON pair.

    Returns the two paths. Nothing else is read or changed."""
    pth = Path(pth)
    if not pth.is_file():
        raise FileNotFoundError(f"--trust_checkpoint: '{pth}' does not exist.")
    try:
        checkpoint = torch.load(str(pth), map_location="cpu", weights_only=False)
    except Exception as err:
        raise CorruptCheckpointError(f"'{pth}' could not be unpickled ({type(err).__name__}: {err}).") from err
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("state_dict"), dict):
        raise CorruptCheckpointError(f"'{pth}' holds no state_dict: it is not a RecBole checkpoint.")
    config = checkpoint.get("config")
    options = _plain(getattr(config, "external_config_dict", None))
    for key in ("model", "dataset"):
        try:
            options.setdefault(key, str(config[key]))
        except Exception:
            pass
    run = checkpoint.get("run") if isinstance(checkpoint.get("run"), dict) else None
    other = checkpoint.get("other_parameter") if isinstance(checkpoint.get("other_parameter"), dict) else {}
    epoch = checkpoint.get("epoch") if isinstance(checkpoint.get("epoch"), int) else -1
    write_pair(pth, checkpoint["state_dict"], other, options, run, epoch)
    return sidecars(pth)
