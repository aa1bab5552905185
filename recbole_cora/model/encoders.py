"""Frozen encoders that LLM models read from finished stage folders (``recbole_cora.stages`` trains them):

* ``FrozenCFEncoder``: the user/item tables of a CF stage (LightGCN, BPR, ...);
* ``FrozenDINEncoder``: RecLoRA's DIN, run per sample on the long ID history;
* ``FrozenSequentialRecommender``: a next-item sequential recommender (BERT4Rec, SASRec, GRU4Rec) for Laser.

Each checks that its stage was made on this dataset and split, and aligns ids by token, never by internal id.
"""

import json
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file
from torch import nn

from recbole_cora.compat import keep_anomaly_mode
from recbole_cora.data.candidates import pair_scores, scores_at
from recbole_cora.recbole_files import CorruptCheckpointError, read_recbole_model, rebuild_config

CF_STAGE_FILE = "embeddings.safetensors"  # a CF stage's tables; written last
DIN_STAGE_FILE = "encoder.json"
SEQUENCE_STAGE_FILE = "encoder.json"

class CFCheckpointError(ValueError):
    """A CF stage that does not belong to this dataset, split or id mapping."""


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


def read_stage_meta(stage, name, dataset, runner):
    """The JSON a stage folder's ``name`` holds, checked against ``dataset``: its name and its split fingerprint."""
    path = Path(stage) / name
    if not path.is_file():
        raise CFCheckpointError(f"stage '{stage}' has no {name}: run the stage first (recbole_cora.stages.{runner}).")
    try:
        meta = json.loads(path.read_text())
    except ValueError as err:
        raise CFCheckpointError(f"'{path}' could not be read ({err}): it is truncated; delete the stage.") from err
    tokens = ("user_tokens", "item_tokens")
    if (not isinstance(meta, dict) or not all(isinstance(meta.get(key), str) for key in ("dataset", "model"))
            or not all(isinstance(meta.get(key), list) and all(isinstance(t, str) for t in meta[key]) for key in tokens)):
        raise CFCheckpointError(
            f"'{path}' is not a stage record (a JSON object with the dataset, the model and the user and item tokens as "
            "strings): it was edited or damaged; delete the stage folder to train it again.")
    if meta.get("dataset") != dataset.dataset_name:
        raise CFCheckpointError(
            f"stage '{stage}' was trained on dataset '{meta.get('dataset')}', not '{dataset.dataset_name}'. "
            "Point `cf_checkpoint_dir` elsewhere or delete that stage."
        )
    fingerprint = getattr(dataset, "fingerprint", None)
    if meta.get("split_fingerprint") != fingerprint:
        raise CFCheckpointError(
            f"stage '{stage}' was trained on another split (fingerprint {meta.get('split_fingerprint')}, this run's is "
            f"{fingerprint}): its {meta.get('model')} would leak or miss interactions. Delete it to retrain, or run "
            "with the split it was trained on."
        )
    return meta


STAGE_MODEL_FILE = "recbole_model.pth"  # RecBole's checkpoint of a stage; read through its safetensors + JSON pair


def read_stage_model(stage, config_class):
    """The stage's trained RecBole model as plain values and its Config, rebuilt by ``config_class`` (the class of
    the run's own Config) from the options it recorded (``recbole_files``): nothing unpickled."""
    try:
        checkpoint = read_recbole_model(Path(stage) / STAGE_MODEL_FILE)
        return checkpoint, rebuild_config(checkpoint, config_class)
    except (CorruptCheckpointError, FileNotFoundError) as err:
        raise CFCheckpointError(f"stage '{stage}': {err} Delete the stage folder to train it again.") from err


class CFInputNorm(nn.Module):
    """How a model reads a frozen CF encoder's (e_u, e_i): as they are (``none``), or with each dimension shifted and
    scaled by its table's mean and standard deviation (``standardize``; fixed statistics, padding row 0 left out).
    LightGCN's propagated embeddings share a large common part (over-smoothing): on the embedded default the raw
    [e_u; e_i] of two training rows have a mean cosine of about 0.9, so what a model computes from them is nearly
    the same for every pair until training amplifies the rest (benchmarks/QUALITY.md §1)."""

    def __init__(self, encoder, mode):
        super().__init__()
        self.mode = mode or "none"
        if self.mode not in ("none", "standardize"):
            raise ValueError(f"cf_input_norm {mode!r}: use none or standardize.")
        if self.mode == "standardize":
            for name, table in (("user", encoder.user_table), ("item", encoder.item_table)):
                rows = table[1:] if len(table) > 2 else table
                self.register_buffer(f"{name}_mean", rows.mean(dim=0), persistent=False)
                self.register_buffer(f"{name}_std", rows.std(dim=0).clamp_min(1e-6), persistent=False)

    def forward(self, user, item):
        if self.mode == "standardize":
            return (user - self.user_mean) / self.user_std, (item - self.item_mean) / self.item_std
        return user, item


class FrozenEncoder(nn.Module):
    """A frozen recommender read from a stage folder, which an LLM model reads and which is scored beside it on the
    same rows (``role``: its name in the results)."""

    role = "encoder"

    def candidate_scores(self, interaction, lists):
        """``task: candidates``: (rows, candidates) scores of each row's list; by default its full ranking's scores at
        the listed items."""
        return scores_at(self.full_sort_predict(interaction), lists)


class FrozenCFEncoder(FrozenEncoder):
    """Frozen user/item embedding tables of a CF stage, aligned by token to ``dataset``'s ids."""

    role = "CF encoder"  # its row in the results: "<model> (frozen CF encoder)"

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
        path = path / CF_STAGE_FILE if path.is_dir() else path
        if not path.is_file():
            raise CFCheckpointError(f"CF stage '{path}' does not exist: run the CF stage first (recbole_cora.stages.run_cf_stage).")
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

    def candidate_scores(self, interaction, lists):
        """The candidate task: each row's user against each item of its list, (rows, candidates) dot products."""
        users = self.user_table[interaction[self.uid_field].to(self.user_table.device)]
        return torch.einsum("rd,rcd->rc", users, self.item_table[lists.to(self.item_table.device)])

    def predict(self, interaction):
        """The CF model's own score, sigmoid(<e_u, e_i>) (LightGCN's and BPR's predict), for side-by-side rows."""
        user, item = self(interaction[self.uid_field].to(self.user_table.device), interaction[self.iid_field].to(self.item_table.device))
        return torch.sigmoid((user * item).sum(dim=-1).double())  # float64: see LabeledLLMRecommender.predict


class FrozenDINEncoder(FrozenEncoder):
    """A frozen DIN from its stage: ``forward(interaction)`` is its final hidden state for each sample
    (user, long history, target item), ``predict`` its own click probability."""

    role = "CF encoder"

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
        from recbole.utils import get_model

        from recbole_cora.data import LabeledDataset, NextItemDataset

        stage = Path(stage)
        meta = read_stage_meta(stage, DIN_STAGE_FILE, dataset, "run_din_stage")
        # the width of the ID history the rows carry: a labeled dataset's `history_len`, a sequential one's (the
        # candidate task) RecBole's MAX_ITEM_LIST_LENGTH (`history_len` is then the titles a prompt shows)
        sequential = isinstance(dataset, NextItemDataset)
        width, option = ((int(dataset.config["MAX_ITEM_LIST_LENGTH"]), "MAX_ITEM_LIST_LENGTH") if sequential
                         else (dataset.history_len, "history_len"))
        if meta.get("history_len") != width:
            raise CFCheckpointError(
                f"stage '{stage}' reads histories of {meta.get('history_len')} items, this dataset carries "
                f"{width} (`{option}`): run the stage for this history length."
            )
        checkpoint, stage_config = read_stage_model(stage, type(dataset.config))
        stage_config["device"] = torch.device(device)  # DIN builds its attention mask on this device
        # DIN's feature tables are rebuilt from the same atomic files with the stage's own options.
        stage_dataset = (NextItemDataset if sequential else LabeledDataset)(stage_config)
        stage_dataset.build()
        with keep_anomaly_mode():  # importing RecBole's sequential package turns anomaly detection on
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
        return torch.sigmoid(self._run(interaction)[1].double())

    def candidate_scores(self, interaction, lists, batch_size=None):
        """The candidate task: DIN's click probability of each row's user and history with each candidate."""
        return pair_scores(self.predict, interaction, lists, self.iid_field, batch_size)


class FrozenSequentialRecommender(FrozenEncoder):
    """A frozen RecBole sequential recommender from its stage (BERT4Rec, SASRec, GRU4Rec): its item embeddings
    (``item_embeddings``) and its own full ranking (``full_sort_predict``) for a side-by-side row.

    The stage must have been trained on this dataset's split with the same item ids (the same atomic files and
    options give the same ids; the tokens are compared, and the stage is refused if they differ)."""

    role = "sequential encoder"  # its row in the results: "<model> (frozen sequential encoder)"

    def __init__(self, recommender, cf_model):
        super().__init__()
        self.recommender = recommender.eval().requires_grad_(False)
        self.cf_model = cf_model

    @classmethod
    def from_stage(cls, stage, dataset):
        from recbole.utils import get_model

        stage = Path(stage)
        meta = read_stage_meta(stage, SEQUENCE_STAGE_FILE, dataset, "run_sequence_stage")
        if meta.get("item_tokens") != [str(t) for t in dataset.field2id_token[dataset.iid_field]]:
            raise CFCheckpointError(f"stage '{stage}' numbers the items differently from this dataset: delete it to retrain.")
        checkpoint, stage_config = read_stage_model(stage, type(dataset.config))
        with keep_anomaly_mode():
            recommender = get_model(meta["model"])(stage_config, dataset)
        recommender.load_state_dict(checkpoint["state_dict"])
        return cls(recommender, meta["model"])

    @property
    def embedding_size(self):
        return self.recommender.item_embedding.embedding_dim

    def train(self, mode=True):
        """Frozen: dropout stays off."""
        return super().train(False)

    def item_embeddings(self, item_ids):
        """The recommender's embedding of each item id (0: padding)."""
        table = self.recommender.item_embedding.weight
        return table[item_ids.to(table.device)]

    def user_states(self, history):
        """(batch, d): the recommender's state of each history (item ids oldest first, 0: padding after them), the
        vector its own ranking scores the items against (SASRec and GRU4Rec: the last position's output; BERT4Rec:
        the output at a mask token after the history)."""
        device = self.recommender.item_embedding.weight.device
        history = history.to(device)
        lengths = (history > 0).sum(dim=1).clamp(min=1)
        if self.cf_model == "BERT4Rec":
            with_mask = self.recommender.reconstruct_test_data(history, lengths)
            return self.recommender.gather_indexes(self.recommender.forward(with_mask), lengths - 1)
        if self.cf_model in ("SASRec", "GRU4Rec"):
            return self.recommender.forward(history, lengths)
        raise ValueError(f"user_token reads the state of SASRec, GRU4Rec or BERT4Rec, not {self.cf_model}: set "
                         "`sequential_encoder` to one of them or `user_token: False`.")

    def full_sort_predict(self, interaction):
        return self.recommender.full_sort_predict(interaction.to(self.recommender.item_embedding.weight.device))
