"""Model, trainer and dataset lookup: the plugin first, then RecBole (the RecBole-GNN pattern)."""

import importlib

from recbole.utils import get_model as recbole_get_model
from recbole.utils import get_trainer as recbole_get_trainer

PLUGIN_MODEL_PACKAGES = ["recbole_cora.model.llm_recommender"]


def plugin_model_names():
    names = []
    for package in PLUGIN_MODEL_PACKAGES:
        module = importlib.import_module(package)
        names += list(getattr(module, "__all__", []))
    return names


def get_model(model_name):
    """The model class named ``model_name``: a plugin model if there is one, else RecBole's."""
    for package in PLUGIN_MODEL_PACKAGES:
        module_path = f"{package}.{model_name.lower()}"
        if importlib.util.find_spec(module_path) is not None:
            return getattr(importlib.import_module(module_path), model_name)
    try:
        return recbole_get_model(model_name)
    except ValueError:
        raise ValueError(
            f"unknown model '{model_name}': it is neither a recbole-cora model "
            f"({', '.join(plugin_model_names()) or 'none yet'}) nor a RecBole model. Check the spelling "
            "(names are case-sensitive, e.g. LightGCN, BPR, FM)."
        ) from None


def get_trainer(model_type, model_name, config=None):
    """The trainer for a model: the plugin's ``<Model>Trainer`` if it exists, else RecBole's choice,
    with labeled all/warm/cold evaluation (``eval_args.mode: labeled``) and safe checkpoints mixed in."""
    from recbole_cora import trainer as plugin_trainers

    base = getattr(plugin_trainers, f"{model_name}Trainer", None) or recbole_get_trainer(model_type, model_name)
    labeled = config is None or "labeled" in config["eval_args"]["mode"].values()
    mixin = plugin_trainers.LabeledEvaluationMixin if labeled else plugin_trainers.CheckpointMixin
    if issubclass(base, mixin):
        return base
    return plugin_trainers.with_mixin(mixin, base)


def create_dataset(config):
    """The plugin's ``LabeledDataset`` for labeled protocols; RecBole's own dataset otherwise."""
    from recbole.data import create_dataset as recbole_create_dataset

    from recbole_cora.data import LabeledDataset

    if "labeled" not in config["eval_args"]["mode"].values():
        return recbole_create_dataset(config)
    return LabeledDataset(config)
