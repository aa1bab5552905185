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


@pytest.fixture(scope="session")
def tiny_llm(tmp_path_factory):
    """A tiny random Llama with a tokenizer trained on ml-100k's titles and the prompt template."""
    from recbole_cora.config import Config
    from recbole_cora.llm.tiny import build_tiny_llm, dataset_texts
    from recbole_cora.utils import create_dataset

    folder = tmp_path_factory.mktemp("tiny_llm")
    import os

    cwd = os.getcwd()
    os.chdir(folder)
    try:
        config = Config("LightGCN", "ml-100k", config_dict=QUIET)
        path = build_tiny_llm(dataset_texts(create_dataset(config), config), folder / "model")
    finally:
        os.chdir(cwd)
    return str(path)


# A small CoRA: tiny query generator, a few CF epochs, ml-100k restricted to its last weeks.
SMALL_CORA = {
    **QUIET, "query_layers": 1, "query_width": 32, "query_heads": 2, "num_queries": 2, "lora_rank": 4,
    "lora_alpha": 8, "cf_config": {"epochs": 3, "embedding_size": 16}, "eval_batch_size": 64,
    "time_window": ["1998-03-01", "1998-05-01"], "epochs": 1,
}
