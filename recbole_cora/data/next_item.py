"""RecBole's ``SequentialDataset`` with item text, for the next-item task.

Everything about sequences is RecBole's own: each interaction of a user, in time order, is one row whose
``item_id_list`` holds the user's earlier items (oldest first, at most ``MAX_ITEM_LIST_LENGTH``), and the split
``LS: valid_and_test`` leaves each user's last item for test and the one before for valid. This adds the item
text of ``ItemTextMixin`` (for prompts), the split fingerprint (stages are keyed and checked by it) and the
prompt history length ``history_len`` (the last titles a prompt shows; the ID history stays as long as RecBole's),
and on each split its name (``phase``) and every user's items (``seen_items``), which ``task: candidates`` draws from.
"""

from recbole.data.dataset import SequentialDataset

from recbole_cora.data.candidates import seen_items
from recbole_cora.data.item_text import ItemTextMixin


class NextItemDataset(ItemTextMixin, SequentialDataset):
    def __init__(self, config):
        self._init_item_text(config)
        self.history_field = config["ITEM_ID_FIELD"] + config["LIST_SUFFIX"]
        self.history_len = int(config["history_len"] or config["MAX_ITEM_LIST_LENGTH"])
        super().__init__(config)

    def build(self):
        datasets = super().build()
        self.fingerprint = self.split_fingerprint(datasets)
        seen = seen_items(self)  # every user's items over the whole data (the candidate draw avoids them)
        for part, phase in zip(datasets, ("train", "valid", "test")):
            part.fingerprint, part.phase, part.seen_items = self.fingerprint, phase, seen
        for name, part in zip(("train", "valid", "test"), datasets):
            if len(part) == 0:
                raise ValueError(
                    f"the {name} split of dataset '{self.dataset_name}' is empty: leave-one-out needs users with at "
                    "least 3 interactions (set `user_inter_num_interval: '[3,inf)'` or more)."
                )
        return datasets
