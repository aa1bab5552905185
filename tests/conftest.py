import logging
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
QUIET = {"state": "WARNING", "show_progress": False}


@pytest.fixture(autouse=True)
def workdir(tmp_path, monkeypatch):
    """RecBole writes log/, log_tensorboard/ and saved/ into the working directory: use a fresh one."""
    monkeypatch.chdir(tmp_path)
    yield tmp_path
    root = logging.getLogger()
    for handler in list(root.handlers):  # RecBole's init_logger adds a file handler per run
        if isinstance(handler, logging.FileHandler):
            root.removeHandler(handler)
            handler.close()


def shared_path(*parts):
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.fail(f"{path} is missing: the tests need the project's shared/ folder beside the checkout.")
    return path
