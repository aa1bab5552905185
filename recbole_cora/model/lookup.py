"""Model lookup by name: the plugin's models first, then RecBole's (the RecBole-GNN pattern)."""

import importlib

from recbole_cora.compat import keep_anomaly_mode

PLUGIN_MODEL_PACKAGES = ["recbole_cora.model.llm_recommender"]


def plugin_model_names():
    names = []
    for package in PLUGIN_MODEL_PACKAGES:
        module = importlib.import_module(package)
        names += list(getattr(module, "__all__", []))
    return names


RECBOLE_MODEL_PACKAGES = [
    "general_recommender", "context_aware_recommender", "sequential_recommender",
    "knowledge_aware_recommender", "exlib_recommender",
]


def _find_module(module_path):
    try:
        return importlib.util.find_spec(module_path)
    except ImportError:  # RecBole's exlib package imports xgboost and lightgbm, optional here
        return None


# Names users know for RecBole models that RecBole calls otherwise: the same everywhere (--model, --compare).
ALIASES = {"MF": "BPR", "ICL": "ZeroShot"}  # the names papers use for them


def get_model(model_name):
    """The model class named ``model_name``: a plugin model if there is one, else RecBole's (``MF`` is BPR).

    (RecBole's own ``get_model`` crashes on any unknown name when lightgbm is not installed.)"""
    model_name = ALIASES.get(model_name, model_name)
    for package in PLUGIN_MODEL_PACKAGES + [f"recbole.model.{p}" for p in RECBOLE_MODEL_PACKAGES]:
        module_path = f"{package}.{model_name.lower()}"
        with keep_anomaly_mode():  # importing RecBole's sequential package turns anomaly detection on
            spec = _find_module(module_path)
            module = importlib.import_module(module_path) if spec is not None else None
        if module is not None:
            if hasattr(module, model_name):
                return getattr(module, model_name)
            spelled = [name for name in dir(module) if name.lower() == model_name.lower()]
            raise ValueError(f"unknown model '{model_name}': model names are case-sensitive; did you mean {spelled}?")
    raise ValueError(
        f"unknown model '{model_name}': it is neither a recbole-cora model "
        f"({', '.join(plugin_model_names()) or 'none yet'}) nor a RecBole model. Check the spelling "
        "(names are case-sensitive, e.g. LightGCN, BPR, FM)."
    )
