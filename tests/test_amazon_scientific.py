"""Laser's Amazon 2018 "Industrial and Scientific" 5-core protocol (dataset_configs/amazon-scientific.yaml) on a
generated slice in RecBole's atomic format: 5-core filtering, leave-one-out, the item text as written."""

import numpy as np

from recbole.data import data_preparation

from recbole_cora import run_recbole_cora
from recbole_cora.config import Config
from recbole_cora.utils import create_dataset

from conftest import QUIET
from helpers import write_atomic

ITEM_HEADER = ["item_id:token", "title:token_seq", "brand:token", "categories:token_seq", "price:float"]


def generate(tmp_path):
    rng = np.random.default_rng(5)
    users = [f"A{u:03d}" for u in range(40)]
    items = [f"B{i:03d}" for i in range(30)]
    rows, t = [], 1_500_000_000
    for u in users:
        for i in rng.choice(items, size=8, replace=False):
            t += int(rng.integers(60, 3600))
            rows.append((u, i, int(rng.integers(1, 6)), t))
    rows += [("U_four", i, 5, t + 10 * k) for k, i in enumerate(items[:4])]  # 4 interactions: out of the 5-core
    rows += [(u, "B_rare", 5, t + 100 + k) for k, u in enumerate(users[:4])]  # an item bought 4 times: out
    text = [(i, f"Digital Caliper, {i[1:]}\" Stainless", "Neiko's", "Industrial & Scientific Test, Measure", 19.99)
            for i in items + ["B_rare"]]
    return write_atomic(tmp_path, "amazon-scientific", rows, item_rows=text, item_header=ITEM_HEADER), rows


def test_the_slice_is_5_core_leave_one_out_with_its_text_verbatim(tmp_path):
    path, rows = generate(tmp_path)
    config = Config("SASRec", "amazon-scientific", config_dict={**QUIET, "data_path": path})
    assert config["task"] == "next_item" and config["threshold"] is None
    dataset = create_dataset(config)
    train, valid, test = data_preparation(config, dataset)
    users = set(dataset.field2id_token["user_id"][1:])
    items = set(dataset.field2id_token["item_id"][1:])
    assert "U_four" not in users and "B_rare" not in items and len(users) == 40
    counts = np.bincount(dataset.inter_feat["user_id"].numpy())[1:]
    assert counts.min() >= 5 and np.bincount(dataset.inter_feat["item_id"].numpy())[1:].min() >= 5
    # leave-one-out: one valid and one test row per user, the user's last two interactions by time
    assert len(valid._dataset) == len(test._dataset) == 40
    last = {}
    for u, i, _, stamp in rows:
        if u in users and i in items:
            last.setdefault(u, []).append((stamp, i))
    test_rows = test._dataset.inter_feat
    for k in range(len(test_rows)):
        user = dataset.field2id_token["user_id"][int(test_rows["user_id"][k])]
        item = dataset.field2id_token["item_id"][int(test_rows["item_id"][k])]
        assert item == max(last[user])[1]
    title = dataset.item_title(dataset.token2id("item_id", "B003"))
    assert title == "Digital Caliper, 003\" Stainless (brand: Neiko's; category: Industrial & Scientific Test, Measure)"


def test_a_sequential_baseline_and_the_labeled_task_run_on_it(tmp_path):
    path, _ = generate(tmp_path)
    options = {**QUIET, "data_path": path, "epochs": 1, "n_layers": 1, "hidden_size": 8, "inner_size": 16,
               "n_heads": 1, "train_batch_size": 64}
    out = run_recbole_cora("SASRec", "amazon-scientific", config_dict=options, saved=False)
    assert out["test_result"]["users"] == 40 and 0 <= out["test_result"]["recall@10"] <= 1
    labeled = Config("FM", "amazon-scientific", config_dict={**QUIET, "data_path": path})
    assert labeled["task"] == "labeled" and labeled["threshold"] == {"rating": 5}
    assert "label" in create_dataset(labeled).inter_feat  # rating 5 -> 1, as the labeled task wants
