"""CoLLM's Amazon-Book protocol (dataset_configs/amazon-book.yaml) on a generated slice in the layout
of RecBole's Amazon_Books atomic files."""

from datetime import datetime, timezone

import numpy as np
import torch

from recbole_cora.config import Config
from recbole_cora.utils import create_dataset

from conftest import QUIET
from helpers import write_atomic

ITEM_HEADER = ["item_id:token", "title:token", "sales_type:token", "sales_rank:float",
               "categories:token_seq", "price:float", "brand:token"]


def ts(year, month, day, hour=0):
    return int(datetime(year, month, day, hour, tzinfo=timezone.utc).timestamp())


def generate(tmp_path):
    rng = np.random.default_rng(11)
    rows = []
    heavy_users = [f"A{u:03d}" for u in range(30)]
    heavy_items = [f"B{i:03d}" for i in range(25)]
    for u in heavy_users:
        for i in heavy_items:  # 25 ratings in 2017 each; 30 per heavy item
            rows.append((u, i, int(rng.integers(1, 6)), ts(2017, int(rng.integers(1, 13)), int(rng.integers(1, 28)), int(rng.integers(0, 24)))))
        rows.append((u, "B900", 5, ts(2016, 6, 1)))  # outside 2017: dropped, and not counted
        rows.append((u, "B901", 5, ts(2018, 1, 2)))
    # 21 ratings in 2017, one on an item rated once: one pass keeps the user with 20 rows (k-core would not)
    rows += [("U_edge", i, 5, ts(2017, 3, 1 + k)) for k, i in enumerate(heavy_items[:20])]
    rows.append(("U_edge", "B_rare", 4, ts(2017, 4, 1)))
    rows += [("U_twenty", i, 5, ts(2017, 5, 1 + k)) for k, i in enumerate(heavy_items[:20])]  # exactly 20: out
    items = [(i, f"Book_{i}", "Books", 1000, "Books Fiction", 9.99, "Pub") for i in heavy_items + ["B_rare", "B900", "B901"]]
    return write_atomic(tmp_path, "amazon-book", rows, item_rows=items, item_header=ITEM_HEADER), rows


def test_collm_amazon_book_protocol(tmp_path):
    path, rows = generate(tmp_path)
    config = Config("FM", "amazon-book", config_dict={**QUIET, "data_path": path})
    data = create_dataset(config)
    train, valid, test = data.build()
    users = {data.id2token("user_id", u) for u in data.inter_feat["user_id"].tolist()}
    items = {data.id2token("item_id", i) for i in data.inter_feat["item_id"].tolist()}
    assert "U_edge" in users and "U_twenty" not in users  # one filtering pass, counted on 2017 alone
    assert "B_rare" not in items and "B900" not in items and "B901" not in items
    assert len(train) + len(valid) + len(test) == 30 * 25 + 20
    # label = rating 5
    kept = {(u, i, float(t)): r for u, i, r, t in rows}
    for part in (train, valid, test):
        feat = part.inter_feat
        for u, i, t, y in zip(feat["user_id"].tolist(), feat["item_id"].tolist(), feat["timestamp"].tolist(), feat["label"].tolist()):
            key = (data.id2token("user_id", u), data.id2token("item_id", i), t)
            assert y == float(kept[key] == 5)
    december = ts(2017, 12, 1)
    assert train.inter_feat["timestamp"].max() < december <= valid.inter_feat["timestamp"].min()
    n_december = sum(1 for u, i, r, t in rows if december <= t < ts(2018, 1, 1) and u.startswith("A") and i.startswith("B0"))
    assert len(valid) == round(n_december / 2) and len(valid) + len(test) == n_december
    assert valid.inter_feat["timestamp"].max() <= test.inter_feat["timestamp"].min()
    assert data.item_text(data.token2id("item_id", "B003")) == {"title": "Book_B003"}
    assert bool(torch.all(train.inter_feat["warm"] == 1))
