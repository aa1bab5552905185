"""The collaborative-filtering (CF) encoder stage: a RecBole general model, trained by RecBole on the
positives of the same labeled train split, then frozen and read as user/item embedding tables.

A stage lives in ``cf_checkpoint_dir/<dataset>-<cf_model>-<key>/``:

* ``embeddings.safetensors``: the final user and item tables (for LightGCN: after propagation), and in
  its metadata the dataset name, the split fingerprint and the user/item tokens of each row, so that a
  consumer aligns rows by token (never by internal id) and loads nothing by unpickling;
* ``recbole_model.pth``: RecBole's own training checkpoint (pickled, as RecBole writes it);
* ``result.json``: the CF model's valid/test metrics on the labeled split.

``run_recbole_stage`` (train a RecBole model for a stage, keyed by split and options, or find it) is shared
with RecLoRA's DIN stage (``recbole_cora.model.sequential_encoder``).
"""

import hashlib
import json
import os
from logging import getLogger
from pathlib import Path

import numpy as np
import torch
from recbole.utils.argument_list import dataset_arguments
from safetensors.torch import load_file, save_file
from torch import nn

# Options of the CF stage that change what it learns: they key the saved stage.
CF_KEY_OPTIONS = (
    "embedding_size", "n_layers", "reg_weight", "learning_rate", "epochs", "train_batch_size",
    "learner", "weight_decay", "stopping_step", "seed", "train_neg_sample_args", "require_pow", "valid_metric",
)


class CFCheckpointError(ValueError):
    """A CF stage that does not belong to this dataset, split or id mapping."""


# What the CF stage takes over from the run: the data and the split, never the LLM model's training options
# (an `epochs: 1` meant for CoRA must not cut LightGCN's training short); `cf_config` sets those.
CF_SHARED_OPTIONS = set(dataset_arguments) | {
    "gpu_id", "use_gpu", "seed", "reproducibility", "state", "data_path", "checkpoint_dir", "show_progress",
    "eval_args", "repeatable", "metrics", "valid_metric", "metric_decimal_place", "encoding",
    "time_window", "inter_num_filter_passes", "history_tie_order", "WARM_FIELD", "cf_checkpoint_dir", "results_dir",
}


def cf_stage_config(config):
    """The RecBole Config of the CF stage: the run's data and split options, the CF model's own
    defaults, and ``cf_config`` on top."""
    from recbole_cora.config import Config

    given = {**config.internal_config_dict, **config.external_config_dict}  # before RecBole rewrites data_path
    options = {key: value for key, value in given.items() if key in CF_SHARED_OPTIONS}
    if config["cf_valid_metric"]:
        options["valid_metric"] = config["cf_valid_metric"]
    options.update(config["cf_config"] or {})
    options["model"] = config["cf_model"]
    return Config(model=config["cf_model"], dataset=config["dataset"], config_dict=options)


def cf_stage_dir(cf_config, fingerprint, key_options=CF_KEY_OPTIONS):
    values = {key: cf_config[key] for key in key_options if key in cf_config}
    blob = json.dumps([cf_config["model"], fingerprint, values], sort_keys=True, default=str)
    key = hashlib.sha256(blob.encode()).hexdigest()[:12]
    return Path(cf_config["cf_checkpoint_dir"]) / f"{cf_config['dataset']}-{cf_config['model']}-{key}"


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
    metadata = {
        "dataset": dataset.dataset_name,
        "cf_model": cf_model,
        "split_fingerprint": fingerprint,
        "user_tokens": json.dumps(list(map(str, dataset.field2id_token[dataset.uid_field]))),
        "item_tokens": json.dumps(list(map(str, dataset.field2id_token[dataset.iid_field]))),
    }
    tmp = Path(path).with_name(f".{Path(path).name}.tmp-{os.getpid()}")
    save_file({"user": user_table.contiguous(), "item": item_table.contiguous()}, str(tmp), metadata=metadata)
    os.replace(tmp, path)


def run_cf_stage(config, dataset=None):
    """Train the CF encoder for ``config``'s dataset and split, or find it trained already.

    Returns the stage folder. ``dataset`` is the caller's LabeledDataset (only its split fingerprint is
    compared with the stage's, as a guard)."""

    def save(model, cf_dataset, fingerprint, stage):
        user_table, item_table = embedding_tables(model)
        save_cf_embeddings(stage / "embeddings.safetensors", user_table, item_table, cf_dataset, fingerprint, cf_dataset.config["model"])

    return run_recbole_stage(
        cf_stage_config(config), dataset, CF_KEY_OPTIONS, "embeddings.safetensors", save,
        what="the train split's positives",
    )


def run_recbole_stage(stage_config, dataset, key_options, done_file, save, what="the train split"):
    """Train a RecBole model for a stage (a frozen encoder of an LLM model), or find it trained already.

    The stage folder is keyed by the model, the split fingerprint and ``key_options``; it holds RecBole's
    checkpoint, ``result.json`` and what ``save(model, stage_dataset, fingerprint, folder)`` writes, last
    of all ``done_file`` (whose presence means the stage is complete). ``dataset`` is the caller's
    LabeledDataset: a stage whose split differs from it is refused."""
    from recbole.data import data_preparation
    from recbole.utils import init_seed

    from recbole_cora.utils import create_dataset, get_trainer
    from recbole_cora.utils import get_model as lookup_model

    logger = getLogger()
    name = stage_config["model"]
    init_seed(stage_config["seed"], stage_config["reproducibility"])
    stage_dataset = create_dataset(stage_config)
    train_data, valid_data, test_data = data_preparation(stage_config, stage_dataset)
    fingerprint = stage_dataset.fingerprint
    if dataset is not None and getattr(dataset, "fingerprint", fingerprint) != fingerprint:
        raise CFCheckpointError(
            f"the {name} stage's split ({fingerprint}) differs from the model's ({dataset.fingerprint}): the "
            "stage must use the same dataset options. Move split/filter options out of the stage's own options "
            "(`cf_config`, `reclora_encoder_config`)."
        )
    stage = cf_stage_dir(stage_config, fingerprint, key_options)
    if (stage / done_file).is_file():
        logger.info(f"{name} stage: reusing {stage}")
        return stage
    stage.mkdir(parents=True, exist_ok=True)
    logger.info(f"{name} stage: training on {what} into {stage}")
    init_seed(stage_config["seed"], stage_config["reproducibility"])
    model = lookup_model(name)(stage_config, train_data._dataset).to(stage_config["device"])
    trainer = get_trainer(stage_config["MODEL_TYPE"], name, stage_config)(stage_config, model)
    trainer.saved_model_file = str(stage / "recbole_model.pth")
    trainer.checkpoint_dir = str(stage)
    _, valid_result = trainer.fit(train_data, valid_data, show_progress=stage_config["show_progress"])
    test_result = trainer.evaluate(test_data, load_best_model=True, show_progress=stage_config["show_progress"])
    with open(stage / "result.json", "w") as f:
        json.dump({"model": name, "valid": valid_result, "test": test_result}, f, indent=2)
    save(model, stage_dataset, fingerprint, stage)
    return stage


def token_index(saved_tokens, dataset, field, path):
    """For each internal id of ``dataset``'s ``field``, the row of the same token in a stage saved with
    ``saved_tokens``: stages are aligned by token, never by internal id."""
    position = {token: row for row, token in enumerate(saved_tokens)}
    tokens = [str(t) for t in dataset.field2id_token[field]]
    missing = [t for t in tokens if t not in position]
    if missing:
        raise CFCheckpointError(
            f"stage '{path}' has no embedding for {len(missing)} {field} token(s) of this dataset "
            f"(e.g. {missing[:3]}): it was made for another id mapping. Delete it to retrain."
        )
    return torch.from_numpy(np.asarray([position[t] for t in tokens], dtype=np.int64))


class FrozenCFEncoder(nn.Module):
    """Frozen user/item embedding tables of a CF stage, aligned by token to ``dataset``'s ids."""

    def __init__(self, user_table, item_table, uid_field="user_id", iid_field="item_id", cf_model="CF"):
        super().__init__()
        self.register_buffer("user_table", user_table)
        self.register_buffer("item_table", item_table)
        self.uid_field, self.iid_field, self.cf_model = uid_field, iid_field, cf_model

    @property
    def embedding_size(self):
        return self.user_table.shape[1]

    @classmethod
    def from_stage(cls, stage, dataset, check_fingerprint=True):
        path = Path(stage)
        path = path / "embeddings.safetensors" if path.is_dir() else path
        if not path.is_file():
            raise CFCheckpointError(f"CF stage '{path}' does not exist: run the CF stage first (run_cf_stage).")
        try:
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
            tables = load_file(str(path))
        except Exception as err:
            raise CFCheckpointError(
                f"CF stage file '{path}' could not be read ({err}): it is truncated or not a CF stage; delete it."
            ) from err
        if meta.get("dataset") != dataset.dataset_name:
            raise CFCheckpointError(
                f"CF stage '{path}' was trained on dataset '{meta.get('dataset')}', not '{dataset.dataset_name}'. "
                "Point `cf_checkpoint_dir` elsewhere or delete that stage."
            )
        fingerprint = getattr(dataset, "fingerprint", None)
        if check_fingerprint and fingerprint is None:
            raise CFCheckpointError(
                f"dataset '{dataset.dataset_name}' has no split fingerprint to check the CF stage against: "
                "build it with recbole_cora's create_dataset in labeled mode (eval_args.mode: labeled)."
            )
        if check_fingerprint and meta.get("split_fingerprint") != fingerprint:
            raise CFCheckpointError(
                f"CF stage '{path}' was trained on another split (fingerprint {meta.get('split_fingerprint')}, "
                f"this run's is {fingerprint}): its embeddings would leak or miss interactions. Delete it to "
                "retrain, or run with the split it was trained on."
            )
        user = cls._align(tables["user"], json.loads(meta["user_tokens"]), dataset, dataset.uid_field, path)
        item = cls._align(tables["item"], json.loads(meta["item_tokens"]), dataset, dataset.iid_field, path)
        return cls(user, item, dataset.uid_field, dataset.iid_field, meta.get("cf_model", "CF"))

    @staticmethod
    def _align(table, saved_tokens, dataset, field, path):
        """Rows of ``table`` reordered so that row i belongs to ``dataset``'s internal id i."""
        return table.index_select(0, token_index(saved_tokens, dataset, field, path))

    def forward(self, user_ids, item_ids):
        return self.user_table[user_ids], self.item_table[item_ids]

    def predict(self, interaction):
        """The CF model's own score, sigmoid(<e_u, e_i>) (LightGCN's and BPR's predict), for side-by-side rows."""
        user, item = self(interaction[self.uid_field].to(self.user_table.device), interaction[self.iid_field].to(self.item_table.device))
        return torch.sigmoid((user * item).sum(dim=-1))
