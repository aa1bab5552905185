"""What both tasks' datasets share: item text read verbatim from the ``.item`` file, clear errors for missing or
malformed atomic files, real time (never normalised) and a fingerprint of the split.

``LabeledDataset`` (RecBole's ``Dataset``) and ``NextItemDataset`` (RecBole's ``SequentialDataset``) mix it in.
"""

import csv
import hashlib
import os

import numpy as np
import pandas as pd
from recbole.utils import FeatureType


class ItemTextMixin:
    """Item text (``text_fields``, ``item_text_template``) and the split fingerprint, for a RecBole dataset."""

    def _init_item_text(self, config):
        self.text_fields = list(config["text_fields"] or [])
        self.item_texts = None

    # ------------------------------------------------------------------ loading
    def _load_data(self, token, dataset_path):
        # RecBole would try to download an unknown dataset folder: say what to set instead.
        inter_file = os.path.join(dataset_path, f"{token}.inter")
        if not os.path.isdir(dataset_path):
            raise FileNotFoundError(
                f"dataset folder '{dataset_path}' does not exist. Set `data_path` to the folder that "
                f"contains '{token}/{token}.inter' (e.g. --data_path=../shared/datasets), or check "
                "the `dataset` name."
            )
        if self.benchmark_filename_list is None and not os.path.isfile(inter_file):
            raise FileNotFoundError(
                f"atomic file '{inter_file}' is missing: a dataset needs at least '{token}.inter' "
                "in its folder (see docs/datasets.md)."
            )
        for suffix in ("inter", "item", "user"):
            self._check_header(os.path.join(dataset_path, f"{token}.{suffix}"))
        super()._load_data(token, dataset_path)
        if self.text_fields:
            self._raw_item_text = self._read_raw_item_text(token, dataset_path)


    def _check_header(self, path):
        """Every column of an atomic file's header is ``name:type`` (RecBole would fail on an unpacking error)."""
        if not os.path.isfile(path):
            return
        with open(path, encoding=self.config["encoding"] or "utf-8") as f:
            header = f.readline().rstrip("\r\n").split(self.config["field_separator"])
        types = {t.value for t in FeatureType}
        bad = [column for column in header if column.count(":") != 1 or column.split(":")[1] not in types]
        if bad:
            raise ValueError(
                f"the header of '{path}' has column(s) {bad} without a valid type: every column is written "
                f"name:type with type one of {sorted(types)}, e.g. user_id:token, rating:float (RecBole's "
                "atomic files; see docs/datasets.md)."
            )


    def _read_raw_item_text(self, token, dataset_path):
        """The text fields exactly as written in the .item file (RecBole splits token_seq on spaces)."""
        path = os.path.join(dataset_path, f"{token}.item")
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"`text_fields` {self.text_fields} need the item file '{path}', which is missing. "
                "Add it, or set `text_fields: []`."
            )
        sep = self.config["field_separator"]
        with open(path, encoding=self.config["encoding"] or "utf-8") as f:
            header = f.readline().rstrip("\r\n").split(sep)
        names = [column.split(":")[0] for column in header]
        missing = [field for field in self.text_fields if field not in names]
        if missing or self.iid_field not in names:
            raise ValueError(
                f"text field(s) {missing or [self.iid_field]} named in `text_fields` are not columns "
                f"of '{path}' (its columns: {names}). Fix `text_fields` in your YAML or the file's header."
            )
        frame = pd.read_csv(
            path, sep=sep, header=0, names=names, dtype=str, keep_default_na=False,
            quoting=csv.QUOTE_NONE, usecols=[self.iid_field] + self.text_fields, engine="python",
            encoding=self.config["encoding"] or "utf-8",
        )
        return frame.drop_duplicates(self.iid_field, keep="first").set_index(self.iid_field)


    def _normalize(self):
        """Never normalize the time field (RecBole's ml-100k.yaml sets ``normalize_all: True``): splits,
        windows and history order need real time."""
        raw_time = self.inter_feat[self.time_field].copy() if self.time_field in self.inter_feat else None
        super()._normalize()
        if raw_time is not None:
            self.inter_feat[self.time_field] = raw_time



    def _data_processing(self):
        super()._data_processing()
        if self.text_fields:
            self.item_texts = self._align_item_texts()

    def _align_item_texts(self):
        """One dict of raw text fields per internal item id (index 0 is RecBole's padding id)."""
        placeholder = self.config["missing_text_placeholder"] or ""
        tokens = self.field2id_token[self.iid_field]
        raw = self._raw_item_text
        texts, missing = [], 0
        for token in tokens:
            if token in raw.index:
                texts.append(raw.loc[token].to_dict())
            else:
                texts.append({field: placeholder for field in self.text_fields})
                missing += token != "[PAD]"
        if missing:
            self.logger.warning(
                f"{missing} item(s) have no row in '{self.dataset_name}.item': their text fields use "
                f"`missing_text_placeholder` ('{placeholder}')."
            )
        return texts


    def item_text(self, item_id):
        """The raw text fields of an internal item id, as a dict ``{field: text}``."""
        if self.item_texts is None:
            raise ValueError("no `text_fields` are configured for this dataset.")
        return self.item_texts[item_id]

    def item_title(self, item_id):
        """An item's text as prompts show it: ``item_text_template`` filled with its text fields
        (the fields joined by spaces when no template is set)."""
        fields = self.item_text(item_id)
        template = self.config["item_text_template"]
        if not template:
            return " ".join(value for value in fields.values() if value)
        try:
            return template.format(**fields)
        except KeyError as err:
            raise ValueError(
                f"item_text_template '{template}' names {err}, which is not in text_fields {self.text_fields}."
            ) from None

    def split_fingerprint(self, datasets):
        """A digest of the split: which (user, item, time, label) rows fall into which part."""
        digest = hashlib.sha256()
        digest.update(self.dataset_name.encode())
        for part in datasets:
            feat = part.inter_feat
            users = np.asarray(self.field2id_token[self.uid_field])[feat[self.uid_field].numpy()]
            items = np.asarray(self.field2id_token[self.iid_field])[feat[self.iid_field].numpy()]
            columns = [users.astype(str), items.astype(str)]
            for field in (self.time_field, self.label_field):
                if field in feat:
                    columns.append(feat[field].numpy().astype(str))
            rows = sorted("\t".join(values) for values in zip(*columns))
            digest.update(str(len(rows)).encode())
            digest.update("\n".join(rows).encode())
        return digest.hexdigest()[:16]
