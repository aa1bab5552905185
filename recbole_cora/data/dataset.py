"""A RecBole ``Dataset`` for labeled (Yes/No) recommendation protocols with item text and histories.

What it adds to RecBole's ``Dataset`` (everything else, from atomic-file loading to id remapping, is
RecBole's own):

* a split by time boundaries, ``eval_args: {split: {TB: ['2002-04-01', '2002-09-01']}}``;
* the raw text of configured item fields (``text_fields``), read as written in the ``.item`` file (``ItemTextMixin``);
* per interaction, the user's last ``history_len`` positive items before it (``HISTORY_FIELD``: ``HistoryMixin``);
* per interaction of every split, a warm flag (``WARM_FIELD``): user and item both in the train split;
* for RecBole's general models (BPR-style), a train split of positives only;
* one-pass interaction-count filtering (``inter_num_filter_passes: 1``), as in CoLLM's Amazon-Book.
"""

import os
from collections import Counter
from datetime import datetime, timezone

import numpy as np
import torch
from recbole.data.dataset import Dataset
from recbole.utils import FeatureSource, FeatureType, ModelType, set_color

from recbole_cora.data.histories import HistoryMixin
from recbole_cora.data.item_text import ItemTextMixin


def parse_time(value, option):
    """Seconds since the epoch (UTC) from a number or an ISO date such as ``2002-04-01``."""
    if isinstance(value, (int, float, np.integer, np.floating)):
        return float(value)
    try:
        stamp = datetime.fromisoformat(str(value))
    except ValueError:
        raise ValueError(
            f"{option}: '{value}' is neither a Unix timestamp nor an ISO date like '2002-04-01'."
        ) from None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=timezone.utc)
    return stamp.timestamp()


def _conf(config, key, default):
    value = config[key]
    return default if value is None else value


class LabeledDataset(HistoryMixin, ItemTextMixin, Dataset):
    def __init__(self, config):
        self._init_item_text(config)
        self.history_len = int(_conf(config, "history_len", 0))
        self.history_field = _conf(config, "HISTORY_FIELD", "history_item_id")
        self.warm_field = _conf(config, "WARM_FIELD", "warm")
        self.history_tie_order = _conf(config, "history_tie_order", "file")  # its values: config.CHOICES
        self.history_length_field = None
        # a next-item model (SASRec, GRU4Rec, ...) on the labeled task: it learns the next positive item after each
        # train row's history of positives, and scores every valid/test row by its predict (CoLLM's SASRec baseline)
        self.learns_next_positive = config["MODEL_TYPE"] == ModelType.SEQUENTIAL and config["model"] not in ("DIN", "DIEN")
        if config["MODEL_TYPE"] == ModelType.SEQUENTIAL:
            # Sequential CTR models (DIN, DIEN) read RecBole's item_id_list / item_length fields.
            self.history_field = config["ITEM_ID_FIELD"] + config["LIST_SUFFIX"]
            self.history_length_field = config["ITEM_LIST_LENGTH_FIELD"]
            self.history_len = self.history_len or int(config["MAX_ITEM_LIST_LENGTH"])
        super().__init__(config)

    # ------------------------------------------------------------------ loading
    def _load_data(self, token, dataset_path):
        super()._load_data(token, dataset_path)
        self.row_counts = [("in the file", len(self.inter_feat))]
        self.file_time_range = self._time_range()
        if self.history_tie_order == "item_first_seen":
            first = self.inter_feat[self.iid_field].drop_duplicates(keep="first")
            self._item_first_row = dict(zip(first.values, first.index))  # position in the file

    # ------------------------------------------------------------------ processing
    def _filter_by_inter_num(self):
        self._inter_num_filter()
        intervals = [self.config[k] for k in ("user_inter_num_interval", "item_inter_num_interval") if self.config[k]]
        if intervals and intervals != ["[0,inf)", "[0,inf)"]:
            self.row_counts.append(
                (f"after user/item_inter_num_interval {self.config['user_inter_num_interval']} / "
                 f"{self.config['item_inter_num_interval']}", len(self.inter_feat))
            )
        if len(self.inter_feat) == 0:
            when = self._time_range_story()
            raise ValueError(f"dataset '{self.dataset_name}': no interaction is left ({self._row_count_story()})"
                             + (f"; {when}." if when else "."))

    def _row_count_story(self):
        return "; ".join(f"{n:,} {where}" for where, n in self.row_counts)

    def _time_range(self):
        """(first, last) value of the time field over the rows now loaded, or None."""
        if self.time_field is None or self.inter_feat is None or self.time_field not in self.inter_feat:
            return None
        times = self.inter_feat[self.time_field]
        times = times.numpy() if torch.is_tensor(times) else np.asarray(times.values, dtype=np.float64)
        return (float(times.min()), float(times.max())) if len(times) else None

    def _time_range_story(self):
        """Where the data's time lies, in the file and after the filters: what a split's boundaries are set against."""
        def span(value):
            first, last = (datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%d %H:%M:%S") for t in value)
            return f"from {first} to {last} UTC ({value[0]:.0f} to {value[1]:.0f})"

        parts = []
        if getattr(self, "file_time_range", None):
            parts.append(f"`{self.time_field}` in the file runs {span(self.file_time_range)}")
        now = self._time_range()
        if now and now != getattr(self, "file_time_range", None):
            parts.append(f"after the filters {span(now)}")
        return "; ".join(parts)

    def _inter_num_filter(self):
        """RecBole repeats count filtering until it converges; CoLLM's Amazon-Book applies it once."""
        passes = self.config["inter_num_filter_passes"]
        if passes is None:
            return super()._filter_by_inter_num()
        for _ in range(int(passes)):
            banned = {}
            for field, option in ((self.uid_field, "user_inter_num_interval"), (self.iid_field, "item_inter_num_interval")):
                interval = self._parse_intervals_str(self.config[option])
                counts = Counter(self.inter_feat[field].values)
                banned[field] = {key for key, n in counts.items() if interval and not self._within_intervals(n, interval)}
            drop = self.inter_feat[self.uid_field].isin(banned[self.uid_field]) | self.inter_feat[
                self.iid_field
            ].isin(banned[self.iid_field])
            self.inter_feat.drop(self.inter_feat.index[drop], inplace=True)
            self.logger.info(
                f"inter_num filter pass: {len(banned[self.uid_field])} users and {len(banned[self.iid_field])} "
                f"items out of range, {int(drop.sum())} interactions dropped"
            )

    def _filter_by_field_value(self):
        """RecBole's ``val_interval``, plus ``time_window: [start, end)`` given as dates or timestamps."""
        super()._filter_by_field_value()
        if self.config["val_interval"]:
            self.row_counts.append((f"after val_interval {self.config['val_interval']}", len(self.inter_feat)))
        window = self.config["time_window"]
        if not window:
            return
        if not isinstance(window, (list, tuple)) or len(window) != 2:
            raise ValueError(f"time_window {window}: give [start, end), e.g. ['2001-06-01', '2003-02-01'].")
        if self.time_field not in self.inter_feat:
            raise ValueError(f"time_window {window} needs the time field `{self.time_field}` (TIME_FIELD) in the .inter file.")
        start, end = (parse_time(value, f"time_window {window}") for value in window)
        times = self.inter_feat[self.time_field].values
        outside = (times < start) | (times >= end)
        self.inter_feat.drop(self.inter_feat.index[outside], inplace=True)
        self.logger.info(f"time_window {window}: {int(outside.sum())} interactions outside it dropped")
        self.row_counts.append((f"after time_window {window}", len(self.inter_feat)))

    def _set_label_by_threshold(self):
        threshold = self.config["threshold"]
        inter_file = os.path.join(self.dataset_path, f"{self.dataset_name}.inter")
        if threshold:
            for field in threshold:
                if field not in self.inter_feat:
                    raise ValueError(
                        f"threshold field '{field}' (option `threshold: {threshold}`) is not a loaded "
                        f"column of '{inter_file}' (loaded: {list(self.inter_feat.columns)}). Name a column "
                        "of the file, and add it to `load_col: {inter: [...]}` if you restrict columns."
                    )
            return super()._set_label_by_threshold()
        if self.label_field not in self.inter_feat:
            raise ValueError(
                f"labeled evaluation needs labels: '{inter_file}' has no `{self.label_field}` column "
                "(LABEL_FIELD) and no `threshold` is set. Set e.g. `threshold: {rating: 4}`."
            )
        values = set(np.unique(self.inter_feat[self.label_field].values).tolist())
        if not values <= {0, 1}:
            raise ValueError(
                f"label column `{self.label_field}` of '{inter_file}' holds {sorted(values)[:5]}; "
                "it must be 0/1. Use `threshold` to derive labels from a rating column."
            )

    def _data_processing(self):
        super()._data_processing()  # item text (ItemTextMixin)
        if self.history_len > 0:
            self._add_histories()

    def _dataframe_to_interaction(self, data):
        """Fixed-width histories, and the time field in float64: RecBole stores float fields as
        float32, whose step near 1e9 (Unix time) is 64-128 seconds, blurring time order."""
        interaction = super()._dataframe_to_interaction(data)
        if self.history_len and self.history_field in data:
            # RecBole pads to the longest sequence present; models want exactly history_len columns.
            history = interaction.interaction[self.history_field]
            if history.dim() == 1:  # every history empty: pad_sequence gave shape (n,)
                history = history.view(len(data), 0)
            padding = history.new_zeros(len(data), self.history_len - history.shape[1])
            interaction.interaction[self.history_field] = torch.cat([history, padding], dim=1)
        if self.time_field in data:
            interaction.interaction[self.time_field] = torch.from_numpy(
                data[self.time_field].values.astype(np.float64)
            )
        return interaction

    # ------------------------------------------------------------------ splitting
    def build(self):
        split = self.config["eval_args"]["split"]
        if isinstance(split, dict) and "TB" in split:
            datasets = self._split_by_time_boundaries(split["TB"])
        else:
            datasets = super().build()
        self._add_warm_flags(datasets)
        # Taken before general models drop negatives: the CF stage and the LLM models share it.
        self.fingerprint = self.split_fingerprint(datasets)
        for part in datasets:  # the parts are shallow copies made before the fingerprint existed
            part.fingerprint = self.fingerprint
        if self.config["MODEL_TYPE"] == ModelType.GENERAL or self.learns_next_positive:
            datasets[0] = self._positives_only(datasets[0])
        for name, part in zip(("train", "valid", "test"), datasets):
            if len(part) == 0:
                when = self._time_range_story()
                raise ValueError(
                    f"the {name} split is empty: `eval_args.split` {split} leaves it no row of "
                    f"{len(self.inter_feat):,} ({self._row_count_story()}). Check the split against the data's "
                    "time range and the filters named here" + (f": {when}." if when else ".")
                )
        return datasets

    def _split_by_time_boundaries(self, boundaries):
        """train < valid_start <= valid < test_start <= test. The second boundary may be a share such
        as '50%': rows from valid_start on, in time order, the first 50% valid and the rest test."""
        option = f"eval_args.split.TB {boundaries}"
        if not isinstance(boundaries, (list, tuple)) or len(boundaries) != 2:
            raise ValueError(f"{option}: give two boundaries [valid_start, test_start] (dates or timestamps).")
        valid_start = parse_time(boundaries[0], option)
        share = str(boundaries[1]).strip()
        self._change_feat_format()
        if self.time_field not in self.inter_feat:
            raise ValueError(f"{option} needs the time field `{self.time_field}` (TIME_FIELD) in the .inter file.")
        self.sort(by=self.time_field)
        times = self.inter_feat[self.time_field].numpy()
        index = np.arange(len(times))
        train = index[times < valid_start]
        rest = index[times >= valid_start]
        if share.endswith("%"):
            n_valid = int(round(len(rest) * float(share[:-1]) / 100.0))
            valid, test = rest[:n_valid], rest[n_valid:]
        else:
            test_start = parse_time(boundaries[1], option)
            if not valid_start < test_start:
                raise ValueError(f"{option}: the boundaries must be increasing.")
            valid, test = rest[times[rest] < test_start], rest[times[rest] >= test_start]
        self._drop_unused_col()
        return [self.copy(self.inter_feat[torch.from_numpy(part)]) for part in (train, valid, test)]

    def _add_warm_flags(self, datasets):
        """warm = the user and the item of the row both occur in the training split."""
        train = datasets[0].inter_feat
        users = np.zeros(self.user_num, dtype=bool)
        items = np.zeros(self.item_num, dtype=bool)
        users[train[self.uid_field].numpy()] = True
        items[train[self.iid_field].numpy()] = True
        self.warm_masks = (torch.from_numpy(users), torch.from_numpy(items))  # for rows made later (inference)
        self.set_field_property(self.warm_field, FeatureType.FLOAT, FeatureSource.INTERACTION, 1)
        for part in datasets:
            feat = part.inter_feat
            warm = users[feat[self.uid_field].numpy()] & items[feat[self.iid_field].numpy()]
            feat.update(type(feat)({self.warm_field: torch.from_numpy(warm.astype(np.float32))}))

    def _positives_only(self, train):
        """General (BPR-style) models treat every training row as a positive: give them label-1 rows only."""
        feat = train.inter_feat
        positive = feat[self.label_field] == 1
        if self.learns_next_positive:  # a target needs a history to follow (RecBole's sequences never start with one)
            positive &= (feat[self.history_field] > 0).any(dim=1)
        keep = torch.nonzero(positive).squeeze(-1)
        self.logger.info(
            set_color("sequential model" if self.learns_next_positive else "general model", "pink")
            + f": training on the {len(keep)} positive rows of {len(feat)} labeled train rows"
        )
        return train.copy(feat[keep])
