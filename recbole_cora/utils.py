"""Model, trainer and dataset lookup: the plugin first, then RecBole (the RecBole-GNN pattern)."""

import importlib

from recbole.utils import get_trainer as recbole_get_trainer

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
    from recbole_cora.compat import keep_anomaly_mode

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


def get_trainer(model_type, model_name, config=None):
    """The trainer for a model: the plugin's ``<Model>Trainer`` if it exists, ``LLMTrainer`` for LLM models, else
    RecBole's choice, with the task's evaluation and safe checkpoints mixed in: labeled all/warm/cold evaluation
    (``eval_args.mode: labeled``) or RecBole's ranking with the user's earlier items masked (``mask_history``)."""
    from recbole_cora import training as plugin_trainers

    from recbole_cora.model.abstract_llm_recommender import LLMRecommender

    base = getattr(plugin_trainers, f"{model_name}Trainer", None)
    if base is None and issubclass(get_model(model_name), LLMRecommender):
        base = plugin_trainers.LLMTrainer
    if base is not None and issubclass(base, plugin_trainers.LLMTrainer):
        return base  # it evaluates both tasks itself
    base = base or recbole_get_trainer(model_type, model_name)
    modes = set(config["eval_args"]["mode"].values()) if config is not None else {"labeled"}
    if "labeled" in modes:
        mixin = plugin_trainers.LabeledEvaluationMixin
    elif config is not None and config["task"] == "candidates":
        mixin = plugin_trainers.CandidateEvaluationMixin
    elif "full" in modes:
        mixin = plugin_trainers.RankingEvaluationMixin
    else:
        mixin = plugin_trainers.CheckpointMixin
    if issubclass(base, mixin):
        return base
    return plugin_trainers.with_mixin(mixin, base)


def create_dataset(config):
    """The plugin's ``LabeledDataset`` for labeled protocols, ``NextItemDataset`` (RecBole's sequential data with
    item text) for sequential models of the next-item task and every model of the candidate task (one split for all
    of them: a CF stage and the LLM model it serves share its fingerprint); RecBole's own dataset otherwise."""
    from recbole.data import create_dataset as recbole_create_dataset
    from recbole.utils import ModelType

    from recbole_cora.data import LabeledDataset, NextItemDataset

    if "labeled" in config["eval_args"]["mode"].values():
        return LabeledDataset(config)
    if config["task"] == "candidates" or (config["MODEL_TYPE"] == ModelType.SEQUENTIAL and config["task"] == "next_item"):
        return NextItemDataset(config)
    return recbole_create_dataset(config)
