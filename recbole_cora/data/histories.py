"""Per interaction, the user's last ``history_len`` positive items before it (``HISTORY_FIELD``), and the same
history for a row made later (a saved run's pair): ``LabeledDataset``'s histories."""

from collections import defaultdict

import numpy as np
import torch
from recbole.utils import FeatureSource, FeatureType


class HistoryMixin:
    """For a RecBole ``Dataset`` with ``history_len``, ``history_tie_order``, ``history_field``,
    ``history_length_field`` and ``learns_next_positive`` set (``LabeledDataset``)."""

    _positive_index = None  # user -> (times, items) of its positives, built on the first ``histories_before``

    def _history_order(self):
        """Row order in which histories accumulate: by time; ties as ``history_tie_order`` says."""
        n = len(self.inter_feat)
        if self.time_field not in self.inter_feat:
            return np.arange(n)
        times = self.inter_feat[self.time_field].values
        if self.history_tie_order == "item_first_seen":
            # CoLLM's preprocessing (a pandas merge with the movie table) grouped same-second rows by
            # the order in which each movie first appears in the ratings file.
            tokens = np.asarray(self.field2id_token[self.iid_field])[self.inter_feat[self.iid_field].values]
            first_seen = np.fromiter((self._item_first_row[t] for t in tokens), dtype=np.int64, count=n)
            return np.lexsort((np.arange(n), first_seen, times))
        return np.argsort(times, kind="stable")  # file order within a tie

    def _add_histories(self):
        """The last ``history_len`` positive items of the user before each interaction.

        "Before" is the order of ``_history_order``; with ``history_tie_order: exclude`` rows of the
        same user and time never see each other."""
        users = self.inter_feat[self.uid_field].values
        items = self.inter_feat[self.iid_field].values
        labels = self.inter_feat[self.label_field].values
        times = self.inter_feat[self.time_field].values if self.time_field in self.inter_feat else np.arange(len(users))
        strict = self.history_tie_order == "exclude"
        histories = np.empty(len(users), dtype=object)
        positives = defaultdict(list)
        pending = {}  # user -> (time, positives of that time), for strict ties
        for row in self._history_order():
            user = users[row]
            seen = positives[user]
            if strict and user in pending and pending[user][0] < times[row]:
                seen.extend(pending.pop(user)[1])
            histories[row] = np.asarray(seen[-self.history_len:], dtype=np.int64)
            if labels[row] == 1:
                if strict:
                    pending.setdefault(user, (times[row], []))[1].append(items[row])
                else:
                    seen.append(items[row])
        self.inter_feat[self.history_field] = histories
        self.set_field_property(
            self.history_field, FeatureType.TOKEN_SEQ, FeatureSource.INTERACTION, self.history_len
        )
        # History ids live in the item id space (like RecBole's item_id_list of sequential models).
        self.field2id_token[self.history_field] = self.field2id_token[self.iid_field]
        self.field2token_id[self.history_field] = self.field2token_id[self.iid_field]
        if self.history_length_field:
            lengths = np.fromiter(map(len, histories), dtype=np.int64)
            if self.learns_next_positive:  # a row with no history reads one padding item (a next-item model needs one)
                lengths = np.maximum(lengths, 1)
            self.inter_feat[self.history_length_field] = lengths
            self.set_field_property(self.history_length_field, FeatureType.TOKEN, FeatureSource.INTERACTION, 1)

    def histories_before(self, user_ids, times):
        """(n, history_len) item ids: each user's last ``history_len`` positive items strictly before the time (rows of
        every split, in time order; rows at that very time are left out), oldest first, right-padded with 0: the
        history a new row of that user at that time gets (``recbole_cora.runs``)."""
        feat = self.inter_feat
        if self._positive_index is None:
            users, items = feat[self.uid_field].numpy(), feat[self.iid_field].numpy()
            labels = feat[self.label_field].numpy()
            stamps = feat[self.time_field].numpy().astype(np.float64) if self.time_field in feat else np.zeros(len(users))
            order = np.argsort(stamps, kind="stable")  # inter_feat is in time order after the split: file order in ties
            index = defaultdict(lambda: ([], []))
            for row in order:
                if labels[row] == 1:
                    index[users[row]][0].append(stamps[row])
                    index[users[row]][1].append(items[row])
            self._positive_index = {user: (np.asarray(t), np.asarray(i, dtype=np.int64)) for user, (t, i) in index.items()}
        out = torch.zeros(len(user_ids), self.history_len, dtype=torch.long)
        for k, (user, when) in enumerate(zip(np.asarray(user_ids), np.asarray(times, dtype=np.float64))):
            stamps, items = self._positive_index.get(int(user), (np.zeros(0), np.zeros(0, dtype=np.int64)))
            seen = items[: int(np.searchsorted(stamps, when, side="left"))][-self.history_len:]
            out[k, : len(seen)] = torch.from_numpy(seen)
        return out
