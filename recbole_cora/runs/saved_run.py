"""A saved run, rebuilt (``runs.loading``): its metrics, scores of (user, item) pairs, recommendations.

Scoring goes through the run's own evaluation path (``LLMTrainer.score_rows``: eval batch size, length bucketing,
rows split between processes and gathered), so a pair scores as that row would in an evaluation. A pair's history
is the user's positives before the pair's time (by default after every interaction in the data); a user or item
the train split never saw is scored as cold (the LLM reads the title; a CF row is untrained) and flagged so. How a
run recommends is its task's (``Task.recommend``).
"""

import math
from pathlib import Path

import torch
from recbole.data.interaction import Interaction

from recbole_cora.model.encoders import FrozenCFEncoder
from recbole_cora.runs.finding import RunLoadError
from recbole_cora.tasks import get_task
from recbole_cora.tasks.labeled import probabilities
from recbole_cora.utils import get_trainer


class _Rows:
    """The smallest RecBole-loader face the evaluation loop needs: ``_dataset`` and ``collate_fn``."""

    def __init__(self, dataset):
        self._dataset = dataset

    def collate_fn(self, index):
        return self._dataset[torch.as_tensor(index, dtype=torch.long)]


class SavedRun:
    """A run rebuilt from its folder: ``config``, ``model``, ``dataset`` and the three splits' loaders."""

    def __init__(self, config, model, dataset, splits, path, kind):
        self.config, self.model, self.dataset = config, model, dataset
        self.train_data, self.valid_data, self.test_data = splits
        self.path, self.kind = Path(path), kind
        self.task = get_task(config)
        self._trainer = None
        self._positives = None

    # ---------------------------------------------------------------- the run's own evaluation
    @property
    def trainer(self):
        if self._trainer is None:
            self._trainer = get_trainer(self.config["MODEL_TYPE"], self.config["model"], self.config)(self.config, self.model)
        return self._trainer

    def evaluate(self, split="test", show_progress=False):
        """The run's metrics on ``split`` (``valid`` or ``test``), as the run itself computed them."""
        data = {"valid": self.valid_data, "test": self.test_data}[split]
        if self.kind == "llm":
            return self.trainer.evaluate_model(self.model, data, show_progress)
        return self.trainer.evaluate(data, load_best_model=False, show_progress=show_progress)

    # ---------------------------------------------------------------- tokens
    def ids(self, field, tokens, what, lines=None):
        """Internal ids of ``tokens`` of ``field``; tokens in no file of the dataset are refused with their lines."""
        mapping = self.dataset.field2token_id[field]
        ids, unknown = [], []
        for k, token in enumerate(tokens):
            index = mapping.get(str(token))
            if index is None or index == 0:
                unknown.append((lines[k] if lines else k + 1, token))
                index = 0
            ids.append(index)
        if unknown:
            shown = ", ".join(f"line {line}: {token!r}" for line, token in unknown[:5])
            more = f" (and {len(unknown) - 5} more)" if len(unknown) > 5 else ""
            raise RunLoadError(f"{len(unknown)} {what} token(s) are in no file of dataset '{self.dataset.dataset_name}': "
                               f"{shown}{more}. Use the tokens of its atomic files.")
        return torch.tensor(ids, dtype=torch.long)

    def item_tokens(self, ids):
        tokens = self.dataset.field2id_token[self.dataset.iid_field]
        return [str(tokens[i]) for i in ids]

    def title(self, item_id):
        return self.dataset.item_title(item_id) if getattr(self.dataset, "item_texts", None) else ""

    # ---------------------------------------------------------------- pairs
    def pair_rows(self, users, items, times=None, lines=None):
        """The rows of (user, item[, time]) token pairs as the run's dataset would hold them: ids, the user's
        history of positives before the time (default: after the last interaction), the warm flag."""
        if self.task.ranking:
            raise RunLoadError(f"scoring pairs is for the labeled task; {self.config['model']} ranks next items "
                               "(use recommend).")
        data = self.dataset
        uid = self.ids(data.uid_field, users, "user", lines)
        iid = self.ids(data.iid_field, items, "item", lines)
        feat = data.inter_feat
        end = float(feat[data.time_field].max()) + 1.0 if data.time_field in feat else 0.0
        when = torch.tensor([end if t is None or t == "" else float(t) for t in (times or [None] * len(uid))],
                            dtype=torch.float64)
        fields = {data.uid_field: uid, data.iid_field: iid, data.label_field: torch.zeros(len(uid))}
        if data.time_field in feat:
            fields[data.time_field] = when
        if data.history_len:
            history = data.histories_before(uid, when)
            fields[data.history_field] = history
            if data.history_length_field:
                fields[data.history_length_field] = (history > 0).sum(dim=1)
        warm_users, warm_items = data.warm_masks  # users and items of the train split (LabeledDataset)
        warm = warm_users[uid] & warm_items[iid]
        fields[data.warm_field] = warm.float()
        return data.copy(Interaction(fields)), warm

    def predict_pairs(self, users, items, times=None, show_progress=False, lines=None):
        """``{"score": float64 probabilities, "warm": bools, "title": the items' titles}`` for the pairs, in input order."""
        part, warm = self.pair_rows(users, items, times, lines)
        titles = [self.title(i) for i in part.inter_feat[self.dataset.iid_field].tolist()]
        if self.kind == "llm":  # every pair, through the run's evaluation loop
            struct = self.trainer.score_rows(self.model, _Rows(part), show_progress, rows=range(len(part)))
            scores = struct.get("rec.score").double()
        else:
            scores = self._recbole_scores(part)
        return {"score": scores, "warm": warm, "title": titles}

    @torch.no_grad()
    def _recbole_scores(self, part):
        loader = _Rows(part)
        size = int(self.config["eval_batch_size"])
        out = []
        for start in range(0, len(part), size):
            batch = loader.collate_fn(list(range(start, min(start + size, len(part))))).to(self.config["device"])
            out.append(probabilities(self.model.predict(batch).double().cpu(), self.config))  # as its evaluation
        return torch.cat(out) if out else torch.zeros(0, dtype=torch.float64)

    # ---------------------------------------------------------------- recommending
    def recommend(self, users, k=10, candidates=50, show_progress=False):
        """The top ``k`` items for each user token, best first: ``[{user, rank, item, score, title, source}]``, as
        the run's task recommends (``Task.recommend``).

        Labeled task: a labeled LLM model re-ranks the ``candidates`` best items of its frozen CF encoder (items the
        user rated positively excluded) by its Yes probability; without a CF encoder, the most popular train items.
        A RecBole model scores every item. Next-item task: every item ranked after the user's whole sequence.
        Candidate task: a list of ``candidates`` items the user never interacted with, ranked by the model."""
        return self.task.recommend(self, users, k, candidates, show_progress)

    def ranked_rows(self, user, items, scores, source):
        """The output rows of one user's ranked ``items`` (internal ids, best first) and their ``scores``."""
        return [{"user": user, "rank": rank, "item": self.item_tokens([item])[0], "score": float(score),
                 "title": self.title(item), "source": source}
                for rank, (item, score) in enumerate(zip(items, scores), 1)]

    def positives(self):
        """Per internal user id, the set of items with a positive row anywhere in the data (never recommended)."""
        if self._positives is None:
            data = self.dataset
            feat = data.inter_feat
            keep = feat[data.label_field] == 1 if data.label_field in feat else torch.ones(len(feat), dtype=torch.bool)
            self._positives = {}
            for user, item in zip(feat[data.uid_field][keep].tolist(), feat[data.iid_field][keep].tolist()):
                self._positives.setdefault(user, set()).add(item)
        return self._positives

    def candidate_pool(self, uid, n):
        """(internal item ids, where they came from) a user's recommendation is chosen among: the run's frozen CF
        encoder's best ``n``, else (an LLM model without one) the ``n`` most popular train items, else (a RecBole
        model) every item; items the user rated positively excluded."""
        known = self.positives().get(uid, set())
        allowed = torch.ones(self.dataset.item_num, dtype=torch.bool)
        allowed[0] = False
        if known:
            allowed[list(known)] = False
        encoder = self.model.reference_encoder() if self.kind == "llm" else None
        if isinstance(encoder, FrozenCFEncoder):  # the frozen CF encoder's own ranking
            scores = (encoder.item_table @ encoder.user_table[uid]).double().cpu()
            scores[~allowed] = -math.inf
            top = torch.topk(scores, min(n, int(allowed.sum()))).indices.tolist()
            return top, f"{encoder.cf_model} top {n}"
        if self.kind == "llm":  # no CF encoder: the most popular train items
            counts = torch.bincount(self.train_data._dataset.inter_feat[self.dataset.iid_field],
                                    minlength=self.dataset.item_num).double()
            counts[~allowed] = -math.inf
            top = torch.topk(counts, min(n, int(allowed.sum()))).indices.tolist()
            return top, f"popular top {n}"
        return torch.nonzero(allowed).squeeze(1).tolist(), "all items"

    def sequence_batch(self, users):
        """(the rows of ``users`` as a next-item model reads them after the user's whole sequence: its last
        ``MAX_ITEM_LIST_LENGTH`` items in time order, and every item each user interacted with)."""
        data = self.dataset
        feat = data.inter_feat
        uids = self.ids(data.uid_field, users, "user")
        stamps = feat[data.time_field].double() if data.time_field in feat else torch.arange(len(feat)).double()
        order = torch.argsort(stamps, stable=True)
        width = int(self.config["MAX_ITEM_LIST_LENGTH"])
        sequences, seen = [], []
        for uid in uids.tolist():
            mine = order[feat[data.uid_field][order] == uid]
            seen.append(feat[data.iid_field][mine])
            sequences.append(seen[-1][-width:])
        history = torch.zeros(len(uids), width, dtype=torch.long)
        for row, items in enumerate(sequences):
            history[row, : len(items)] = items
        lengths = torch.tensor([max(1, len(items)) for items in sequences])
        batch = Interaction({
            data.uid_field: uids, data.iid_field: torch.tensor([int(s[-1]) if len(s) else 0 for s in sequences]),
            self.config["ITEM_ID_FIELD"] + self.config["LIST_SUFFIX"]: history,
            self.config["ITEM_LIST_LENGTH_FIELD"]: lengths,
        }).to(self.config["device"])
        return batch, seen
