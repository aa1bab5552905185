import contextlib
import subprocess
import sys

import pytest
import torch

from recbole_cora.compat import atomic_torch_save
from recbole_cora.config import Config

from conftest import QUIET, ROOT


def test_recbole_s_pth_reads_back_weights_only_on_current_torch(tmp_path):
    # torch>=2.6 loads weights-only by default and RecBole pickles its Config into every checkpoint, so RecBole's
    # own load_best_model fails; recbole-cora writes the file at torch's default protocol, which the weights-only
    # reader parses (tests/test_loading.py holds the rest: the pair written beside it, foreign files).
    from recbole_cora.recbole_files import read_foreign_checkpoint

    path = tmp_path / "BPR.pth"
    atomic_torch_save({"config": Config("BPR", "ml-100k", config_dict=QUIET), "state_dict": {"w": torch.ones(2)}}, path)
    with pytest.raises(Exception, match="[Ww]eights only load failed"):
        torch.load(path)
    assert torch.equal(read_foreign_checkpoint(path)["state_dict"]["w"], torch.ones(2))
    assert not list(tmp_path.glob(".*tmp*"))  # the atomic write left no temporary file


def test_a_truncated_checkpoint_gets_a_clear_error(tmp_path):
    from recbole_cora.recbole_files import CorruptCheckpointError, read_recbole_model

    path = tmp_path / "ckpt.pth"
    atomic_torch_save({"state_dict": {"w": torch.ones(1000)}}, path)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(CorruptCheckpointError, match="truncated or not a RecBole checkpoint"):
        read_recbole_model(path)


def test_the_plugin_never_imports_recbole_quick_start():
    # recbole.quick_start imports ray, which cannot be installed on Python 3.12.
    code = "import sys, recbole_cora, recbole_cora.model.encoders, recbole_cora.stages; print('recbole.quick_start' in sys.modules, 'ray' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_importing_a_recbole_sequential_model_leaves_anomaly_detection_off():
    # RecBole's sine.py turns autograd anomaly detection on when its package is imported (DIN's package).
    code = ("import torch; from recbole_cora.utils import get_model; get_model('DIN'); a = torch.is_anomaly_enabled(); "
            "import recbole.model.sequential_recommender; print(a, torch.is_anomaly_enabled())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.split() == ["False", "False"]
    bare = "import torch, recbole.model.sequential_recommender; print(torch.is_anomaly_enabled())"
    out = subprocess.run([sys.executable, "-c", bare], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.split() == ["True"]  # what the shim undoes


def test_run_dirs_exist_before_recbole_creates_them_so_processes_do_not_race(tmp_path, monkeypatch):
    """RecBole's ensure_dir is check-then-create: a process whose makedirs comes second in the race dies
    with FileExistsError. With the folders made first (exist_ok), RecBole never calls makedirs."""
    import os

    from recbole.utils import logger as recbole_logger
    from recbole.utils import utils as recbole_utils

    from recbole_cora.compat import make_run_dirs
    from recbole_cora.config import Config

    config = Config("BPR", "ml-100k", config_dict={"state": "WARNING"})
    monkeypatch.chdir(tmp_path)

    def loses_the_race(path, *args, **kwargs):  # another process created it between check and create
        raise FileExistsError(17, "File exists", path)

    monkeypatch.setattr(recbole_utils.os, "makedirs", loses_the_race)
    with pytest.raises(FileExistsError):
        recbole_logger.init_logger(config)
    monkeypatch.undo()
    monkeypatch.chdir(tmp_path)
    make_run_dirs(config)
    monkeypatch.setattr(recbole_utils.os, "makedirs", loses_the_race)
    recbole_logger.init_logger(config)  # finds every folder in place: no makedirs, no race
    assert os.path.isdir(os.path.join("log", "BPR")) and os.path.isdir(config["checkpoint_dir"])


def test_recbole_s_own_deprecation_warnings_are_filtered_and_others_still_show():
    """RecBole's trainer printed torch's GradScaler FutureWarning 61 times in one run, inside the progress bars."""
    import warnings

    from recbole_cora import run_recbole_cora
    from conftest import QUIET

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run_recbole_cora("LightGCN", "ml-100k", config_dict={**QUIET, "epochs": 1, "eval_rows": 100})
        warnings.warn("a warning of the user's own", UserWarning)
    messages = [str(w.message) for w in caught]
    assert not [m for m in messages if "GradScaler" in m or "chained assignment" in m or "SparseTensor" in m], messages
    assert "a warning of the user's own" in messages


@contextlib.contextmanager
def recbole_logging():
    """The root logger without pytest's handlers (with them RecBole's init_logger installs nothing); the handlers the
    runs inside installed are closed after, and pytest's put back."""
    import logging

    root = logging.getLogger()
    kept = root.handlers[:]
    for handler in kept:
        root.removeHandler(handler)
    try:
        yield root
    finally:
        for handler in root.handlers[:]:
            root.removeHandler(handler)
            handler.close()
        for handler in kept:
            root.addHandler(handler)


def log_files(root):
    import logging

    return [h.baseFilename for h in root.handlers if isinstance(h, logging.FileHandler)]


def test_the_config_dump_goes_to_the_log_file_and_the_console_gets_one_line(capsys):
    """RecBole's console handler gets one line; its log file has the 150-line config dump and the dataset."""
    from recbole_cora import run_recbole_cora
    from conftest import QUIET

    with recbole_logging() as root:
        run_recbole_cora("BPR", "ml-100k", config_dict={**QUIET, "state": "INFO", "epochs": 1})
        files = log_files(root)
    console = capsys.readouterr().err
    assert f"resolved config, dataset and model: in {files[0]}" in console
    assert "use_gpu" not in console and "The number of users" not in console  # the dump, the dataset
    text = open(files[0]).read()
    assert "use_gpu" in text and "The number of users" in text


def test_a_second_run_in_one_process_logs_into_its_own_file(capsys):
    """RecBole's init_logger installs its handlers with logging.basicConfig, a no-op once the root logger has any: a
    comparison's second model logged into the first model's file and named it as its own."""
    from recbole_cora import run_recbole_cora
    from conftest import QUIET

    files = []
    with recbole_logging() as root:
        for model in ("BPR", "Pop"):
            run_recbole_cora(model, "ml-100k", config_dict={**QUIET, "state": "INFO", "epochs": 1})
            files.append(log_files(root))
    assert len(files[0]) == len(files[1]) == 1 and "/Pop/" in files[1][0], files
    console = capsys.readouterr().err
    assert f"resolved config, dataset and model: in {files[1][0]}" in console
    assert "Pop(" in open(files[1][0]).read() and "Pop(" not in open(files[0][0]).read()  # each model in its own file
