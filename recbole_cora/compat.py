"""The one place where recbole-cora bridges RecBole 1.2.1 and the current stack.

Each shim states what breaks and why; ``tests/test_compat.py`` holds a test per shim that fails
without it. Nothing here patches RecBole's code: the shims are helpers our subclasses call.

Known breakages handled elsewhere by pins (``constraints.txt``): numpy 2 (``np.float_``), scipy 1.13,
pandas 3 and setuptools 81 (``ray`` imports ``pkg_resources``). ``recbole.quick_start`` imports
``ray``, which cannot be installed on Python 3.12: the plugin never imports it.
"""

import contextlib
import logging
import os

import torch


def atomic_torch_save(obj, path):
    """``torch.save`` through a temporary file and a rename, so a killed run never leaves half a file.

    torch's default pickle protocol (2), which its weights-only reader parses: RecBole's tools read the file, and
    recbole-cora itself reads the safetensors + JSON pair written beside it (``recbole_files``)."""
    from recbole_cora.io import atomic_path

    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


@contextlib.contextmanager
def keep_anomaly_mode():
    """Leave torch's autograd anomaly detection as it was, whatever RecBole imports inside the block.

    ``recbole/model/sequential_recommender/sine.py`` calls ``torch.autograd.set_detect_anomaly(True)`` at
    import time, and importing any of RecBole's sequential models (DIN, SASRec, ...) imports that package:
    from then on every backward pass of the process checks every gradient for NaNs (about 40% of a DIN
    training step on CPU, and any LLM trained later in the same process pays it too).
    """
    enabled = torch.is_anomaly_enabled()
    try:
        yield
    finally:
        torch.autograd.set_detect_anomaly(enabled)


def make_run_dirs(config):
    """Create RecBole's ``./log/<model>`` and ``checkpoint_dir`` before RecBole does.

    RecBole's ``ensure_dir`` checks ``os.path.exists`` and then calls ``os.makedirs``: two processes
    started together (torchrun, ``accelerate launch``) race between the two, and the loser dies with
    ``FileExistsError: './log'``. Created here first with ``exist_ok``, RecBole finds them in place."""
    for folder in (os.path.join("log", str(config["model"])), config["checkpoint_dir"] or "saved"):
        os.makedirs(folder, exist_ok=True)


# Warnings RecBole 1.2.1's own code raises on the current stack, on every run, that a user can do nothing about;
# each is matched by its exact message and the module that raises it, so any other warning still shows.
RECBOLE_WARNINGS = (
    # recbole/trainer/trainer.py builds torch.cuda.amp.GradScaler in every training epoch (61 times in one run, inside
    # the progress bars); torch 2.4+ deprecates that name. Harmless: on a CPU it is disabled.
    (FutureWarning, r"`torch\.cuda\.amp\.GradScaler\(args\.\.\.\)` is deprecated", r"recbole\.trainer\.trainer"),
    # recbole/data/dataset/dataset.py fills missing values with fillna(inplace=True) on a column (pandas 2.2+).
    (FutureWarning, r"A value is trying to be set on a copy of a DataFrame or Series through chained assignment",
     r"recbole\.data\.dataset\.dataset"),
    # recbole/data/dataset/dataset.py splits token_seq columns with Series.agg(len) (pandas 2.2+ deprecates a
    # non-aggregating function there; printed once per dataset a run builds, i.e. once more per stage).
    (FutureWarning, r"using <built-in function len> in Series\.agg cannot aggregate", r"recbole\.data\.dataset\.dataset"),
    # recbole/model/general_recommender/lightgcn.py and ngcf-style graph models build torch.sparse.FloatTensor.
    (UserWarning, r"torch\.sparse\.SparseTensor\(indices, values, shape, \*, device=\) is deprecated",
     r"recbole\.model\.general_recommender\..*"),
)


def release_previous_run_logging():
    """Close and remove the root logger's handlers that RecBole's ``init_logger`` installed for an earlier run in
    this process. ``init_logger`` installs its console and file handlers with ``logging.basicConfig``, which does
    nothing once the root logger has handlers: every later run in the process (``--compare``, tuning, the tests)
    logged into the first run's file and named that file as its own. Call it just before ``init_logger``."""
    import colorlog

    root = logging.getLogger()
    for handler in list(root.handlers):
        ours = isinstance(handler, logging.FileHandler) or isinstance(getattr(handler, "formatter", None),
                                                                      colorlog.ColoredFormatter)
        if ours:  # RecBole's pair: its file and its coloured console; a handler someone else added stays
            root.removeHandler(handler)
            handler.close()


def silence_recbole_warnings():
    """Filter ``RECBOLE_WARNINGS`` (the pipeline calls it once, before RecBole runs)."""
    import warnings

    for category, message, module in RECBOLE_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category, module=module)
