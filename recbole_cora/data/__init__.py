from recbole_cora.data.dataset import LabeledDataset, parse_time
from recbole_cora.data.next_item import NextItemDataset

__all__ = ["LabeledDataset", "NextItemDataset", "parse_time"]
