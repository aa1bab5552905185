"""RecBole's lookups for this package: ``get_model``, ``get_trainer``, ``create_dataset`` (the RecBole-GNN pattern:
the plugin's first, then RecBole's)."""

from recbole.data import create_dataset as recbole_create_dataset
from recbole.utils import get_trainer as recbole_get_trainer

from recbole_cora import training as plugin_trainers
from recbole_cora.model.abstract_llm_recommender import LLMRecommender
from recbole_cora.model.lookup import ALIASES, get_model, plugin_model_names
from recbole_cora.tasks import get_task

__all__ = ["ALIASES", "create_dataset", "get_model", "get_trainer", "plugin_model_names"]


def get_trainer(model_type, model_name, config=None):
    """The trainer for a model: the plugin's ``<Model>Trainer`` if it exists, ``LLMTrainer`` for LLM models, else
    RecBole's choice with safe checkpoints and the task's evaluation mixed in (``Task.recbole_mixin``: labeled
    all/warm/cold, RecBole's ranking with the user's earlier items masked, or fixed candidate lists)."""
    base = getattr(plugin_trainers, f"{model_name}Trainer", None)
    if base is None and issubclass(get_model(model_name), LLMRecommender):
        base = plugin_trainers.LLMTrainer
    if base is not None and issubclass(base, plugin_trainers.LLMTrainer):
        return base  # it evaluates every task itself
    base = base or recbole_get_trainer(model_type, model_name)
    mixin = get_task(config if config is not None else "labeled").recbole_mixin(config)
    return plugin_trainers.with_mixin(mixin, base)


def create_dataset(config):
    """The task's dataset (``Task.dataset_class``: ``LabeledDataset`` for the labeled task, ``NextItemDataset``,
    RecBole's sequential data with item text, for sequential models of the next-item task and every model of the
    candidate task); RecBole's own dataset otherwise."""
    dataset_class = get_task(config).dataset_class(config)
    return dataset_class(config) if dataset_class is not None else recbole_create_dataset(config)
