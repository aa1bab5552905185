"""RecLoRA's conventional recommender stage: RecBole's DIN, trained by RecBole on the labeled rows of the
same train split (DIN is a CTR model: it learns from the labels, not from positives alone), then frozen
and run per sample on the user's long ID history. Its final hidden state (the output of DIN's MLP before
the prediction layer; 256-d with RecBole's default ``mlp_hidden_size``) is the sample's user-interest
representation.

A stage lives beside the CF stages, in ``cf_checkpoint_dir/<dataset>-DIN-<key>/`` (keyed by the split
fingerprint and the options that change what DIN learns, history length included):

* ``recbole_model.pth``: RecBole's own checkpoint of the best epoch (pickled, as RecBole writes it; it is
  only ever read from its stage folder, through ``compat.load_recbole_checkpoint``);
* ``result.json``: DIN's valid/test metrics on the labeled split;
* ``encoder.json``, written last: dataset name, split fingerprint, history length and the user/item tokens
  in DIN's id order, so that a consumer checks the split and aligns ids by token.
"""

import json
import os
from pathlib import Path

import torch
from torch import nn

from recbole_cora.compat import load_recbole_checkpoint
from recbole_cora.model.collaborative import (
    CF_KEY_OPTIONS, CF_SHARED_OPTIONS, CFCheckpointError, run_recbole_stage, token_index,
)

SEQUENTIAL_ENCODERS = ("DIN",)
# What changes what DIN learns, besides the split: its own sizes, the history it reads, the features loaded.
DIN_KEY_OPTIONS = CF_KEY_OPTIONS + (
    "mlp_hidden_size", "dropout_prob", "pooling_mode", "MAX_ITEM_LIST_LENGTH", "load_col", "numerical_features",
)
STAGE_FILE = "encoder.json"


def sequential_stage_config(config):
    """The RecBole Config of the DIN stage: the run's data and split options, DIN's own defaults,
    ``reclora_encoder_config`` on top, and the run's long history length as DIN's sequence length."""
    from recbole_cora.config import Config

    model = config["reclora_encoder"]
    if model not in SEQUENTIAL_ENCODERS:
        raise ValueError(f"reclora_encoder {model!r} has no sequential stage: use one of {list(SEQUENTIAL_ENCODERS)} or 'cf'.")
    given = {**config.internal_config_dict, **config.external_config_dict}  # before RecBole rewrites data_path
    options = {key: value for key, value in given.items() if key in CF_SHARED_OPTIONS}
    # A CTR model learns from the labeled rows as they are: no sampled negatives (RecBole's default for DIN).
    options["train_neg_sample_args"] = None
    options.update(config["reclora_encoder_config"] or {})
    options["model"] = model
    # DIN reads exactly the long history the LLM model's dataset carries (its attention mask has this width).
    options["MAX_ITEM_LIST_LENGTH"] = int(config["history_len"])
    options["history_len"] = int(config["history_len"])
    options["repeatable"] = True  # RecBole requires it of sequential models (labeled evaluation does not use it)
    return Config(model=model, dataset=config["dataset"], config_dict=options)


def run_sequential_stage(config, dataset=None):
    """Train DIN for ``config``'s dataset and split on the labeled train rows, or find it trained already.
    Returns the stage folder; a stage made for another split than ``dataset``'s is refused."""

    def save(model, stage_dataset, fingerprint, stage):
        meta = {
            "dataset": stage_dataset.dataset_name,
            "model": stage_dataset.config["model"],
            "split_fingerprint": fingerprint,
            "history_len": int(stage_dataset.config["MAX_ITEM_LIST_LENGTH"]),
            "user_tokens": list(map(str, stage_dataset.field2id_token[stage_dataset.uid_field])),
            "item_tokens": list(map(str, stage_dataset.field2id_token[stage_dataset.iid_field])),
        }
        tmp = stage / f".{STAGE_FILE}.tmp-{os.getpid()}"
        tmp.write_text(json.dumps(meta))
        os.replace(tmp, stage / STAGE_FILE)

    return run_recbole_stage(
        sequential_stage_config(config), dataset, DIN_KEY_OPTIONS, STAGE_FILE, save,
        what="the train split's labeled rows",
    )


class FrozenSequentialEncoder(nn.Module):
    """A frozen DIN from its stage: ``forward(interaction)`` is its final hidden state for each sample
    (user, long history, target item), ``predict`` its own click probability."""

    def __init__(self, din, user_index, item_index, uid_field, iid_field, history_field, cf_model="DIN"):
        super().__init__()
        self.din = din.eval().requires_grad_(False)
        self.register_buffer("user_index", user_index)  # this dataset's ids -> DIN's ids, by token
        self.register_buffer("item_index", item_index)
        self.uid_field, self.iid_field, self.history_field, self.cf_model = uid_field, iid_field, history_field, cf_model
        self._hidden = None
        # DIN's final hidden state is the input of its prediction layer
        self.din.dnn_predict_layers.register_forward_hook(self._keep_hidden)

    @property
    def embedding_size(self):
        return self.din.dnn_predict_layers.in_features

    @classmethod
    def from_stage(cls, stage, dataset, device="cpu"):
        from recbole_cora.utils import create_dataset, get_model

        stage = Path(stage)
        meta_path = stage / STAGE_FILE
        if not meta_path.is_file():
            raise CFCheckpointError(f"stage '{stage}' has no {STAGE_FILE}: run the stage first (run_sequential_stage).")
        try:
            meta = json.loads(meta_path.read_text())
        except ValueError as err:
            raise CFCheckpointError(f"'{meta_path}' could not be read ({err}): it is truncated; delete the stage.") from err
        if meta.get("dataset") != dataset.dataset_name:
            raise CFCheckpointError(
                f"stage '{stage}' was trained on dataset '{meta.get('dataset')}', not '{dataset.dataset_name}'. "
                "Point `cf_checkpoint_dir` elsewhere or delete that stage."
            )
        fingerprint = getattr(dataset, "fingerprint", None)
        if meta.get("split_fingerprint") != fingerprint:
            raise CFCheckpointError(
                f"stage '{stage}' was trained on another split (fingerprint {meta.get('split_fingerprint')}, this "
                f"run's is {fingerprint}): its {meta.get('model')} would leak or miss interactions. Delete it to "
                "retrain, or run with the split it was trained on."
            )
        if meta.get("history_len") != dataset.history_len:
            raise CFCheckpointError(
                f"stage '{stage}' reads histories of {meta.get('history_len')} items, this dataset carries "
                f"{dataset.history_len} (`history_len`): run the stage for this history length."
            )
        checkpoint = load_recbole_checkpoint(stage / "recbole_model.pth", map_location="cpu", trusted_dirs=[stage])
        stage_config = checkpoint["config"]
        stage_config["device"] = torch.device(device)  # DIN builds its attention mask on this device
        # DIN's feature tables are rebuilt from the same atomic files with the stage's own options.
        stage_dataset = create_dataset(stage_config)
        stage_dataset.build()
        din = get_model(stage_config["model"])(stage_config, stage_dataset)
        din.load_state_dict(checkpoint["state_dict"])
        return cls(
            din.to(device),
            token_index(meta["user_tokens"], dataset, dataset.uid_field, stage),
            token_index(meta["item_tokens"], dataset, dataset.iid_field, stage),
            dataset.uid_field, dataset.iid_field, dataset.history_field, stage_config["model"],
        )

    def _apply(self, fn, *args, **kwargs):
        # RecBole's DIN keeps its attention mask as a plain tensor made on config["device"]: move it too.
        super()._apply(fn, *args, **kwargs)
        self.din.attention.mask_mat = fn(self.din.attention.mask_mat)
        return self

    def _keep_hidden(self, module, inputs, output):
        self._hidden = inputs[0]

    def train(self, mode=True):
        """Frozen: DIN's batch norm and dropout stay in eval mode."""
        return super().train(False)

    def _run(self, interaction):
        device = self.user_index.device
        user = self.user_index[interaction[self.uid_field].to(device)]
        item = self.item_index[interaction[self.iid_field].to(device)]
        history = self.item_index[interaction[self.history_field].to(device)]  # padding 0 stays 0
        logit = self.din(user, history, (history > 0).sum(dim=1), item)
        hidden, self._hidden = self._hidden, None
        return hidden, logit

    def forward(self, interaction):
        return self._run(interaction)[0]

    def predict(self, interaction):
        """DIN's own click probability, for a side-by-side row on the same evaluation rows."""
        return torch.sigmoid(self._run(interaction)[1])
