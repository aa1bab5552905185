from recbole_cora.data.dataset import LabeledDataset, parse_time

__all__ = ["LabeledDataset", "parse_time"]
