"""recbole-cora: LLM-based recommendation with collaborative information, as a RecBole plugin.

Importing the package registers its metrics with RecBole and nothing else; ``run_recbole_cora``, ``load_run`` and
``load_data_and_model`` are imported when first used, so a part of the package (a model, the trainer) can be imported
without the whole pipeline."""

import importlib

from recbole_cora.evaluator import register_metrics

register_metrics()

_EXPORTS = {
    "run_recbole_cora": "recbole_cora.quick_start",
    "load_data_and_model": "recbole_cora.runs",
    "load_run": "recbole_cora.runs",
}
__all__ = sorted(_EXPORTS)
__version__ = "0.1.0"


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'recbole_cora' has no attribute '{name}'")


def __dir__():
    return sorted([*globals(), *_EXPORTS])
