"""The collaborative-filtering (CF) encoder stage: a RecBole general model trained by RecBole on the positives
of the labeled train split, then frozen and read as user/item embedding tables (``FrozenCFEncoder``).

Its folder (``cf_checkpoint_dir/<dataset>-<cf_model>-<key>/``) holds ``embeddings.safetensors``: the final user
and item tables (for LightGCN: after propagation) and, in its metadata, the dataset name, the split fingerprint
and the user/item token of each row, so that a consumer aligns rows by token and unpickles nothing.
"""

import json

import torch
from torch import nn

from recbole_cora.io import atomic_path
from recbole_cora.model.encoders import CF_STAGE_FILE
from recbole_cora.stages.runner import KEY_OPTIONS, run_recbole_stage, stage_config
from recbole_cora.tasks import get_task

CF_KEY_OPTIONS = KEY_OPTIONS


def cf_stage_config(config):
    """The CF stage's Config: the run's data and split, the CF model's defaults, ``cf_config`` on top; on the labeled
    task it early-stops on ``cf_valid_metric``."""
    # on a ranking task the stage stops on the task's own valid_metric
    options = {"valid_metric": config["cf_valid_metric"]} if config["cf_valid_metric"] and not get_task(config).ranking else {}
    options.update(config["cf_config"] or {})
    return stage_config(config, config["cf_model"], options)


def embedding_tables(model):
    """Final (user, item) embedding tables of a trained RecBole general model."""
    model.eval()
    with torch.no_grad():
        try:
            output = model.forward()  # graph models: LightGCN, NGCF, SGL, ... propagate here
        except TypeError:
            output = None
        if isinstance(output, tuple) and len(output) == 2 and all(torch.is_tensor(t) for t in output):
            return output[0].detach().cpu(), output[1].detach().cpu()
        user, item = getattr(model, "user_embedding", None), getattr(model, "item_embedding", None)
        if isinstance(user, nn.Embedding) and isinstance(item, nn.Embedding):  # MF-style (BPR, ...)
            return user.weight.detach().cpu(), item.weight.detach().cpu()
    raise ValueError(
        f"cf_model {type(model).__name__}: its user/item embeddings cannot be read (neither a graph model "
        "whose forward() returns them nor an MF-style model with user_embedding/item_embedding). Use "
        "LightGCN, BPR, NGCF, SGL or another such RecBole general model."
    )


def save_cf_embeddings(path, user_table, item_table, dataset, fingerprint, cf_model):
    from safetensors.torch import save_file

    metadata = {
        "dataset": dataset.dataset_name,
        "cf_model": cf_model,
        "split_fingerprint": fingerprint,
        "user_tokens": json.dumps(list(map(str, dataset.field2id_token[dataset.uid_field]))),
        "item_tokens": json.dumps(list(map(str, dataset.field2id_token[dataset.iid_field]))),
    }
    with atomic_path(path) as tmp:
        save_file({"user": user_table.contiguous(), "item": item_table.contiguous()}, str(tmp), metadata=metadata)


def run_cf_stage(config, dataset=None):
    """Train the CF encoder for ``config``'s dataset and split, or find it trained already; returns its folder."""

    def save(model, cf_dataset, fingerprint, stage):
        user_table, item_table = embedding_tables(model)
        save_cf_embeddings(stage / CF_STAGE_FILE, user_table, item_table, cf_dataset, fingerprint,
                           cf_dataset.config["model"])

    return run_recbole_stage(cf_stage_config(config), dataset, CF_KEY_OPTIONS, CF_STAGE_FILE, save,
                             what="the train split's positives")
