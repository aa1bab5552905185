import csv
from datetime import datetime, timezone

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recbole_cora.config import Config
from recbole_cora.utils import create_dataset

from conftest import QUIET
from helpers import write_atomic


def build(model="FM", dataset="ml-100k", **options):
    config = Config(model, dataset, config_dict={**QUIET, **options})
    data = create_dataset(config)
    return data, data.build()


def raw_frame(data):
    path = f"{data.dataset_path}/{data.dataset_name}.inter"
    frame = pd.read_csv(path, sep="\t", dtype=str, quoting=csv.QUOTE_NONE)
    frame.columns = [c.split(":")[0] for c in frame.columns]
    frame["timestamp"] = frame["timestamp"].astype(float)
    frame["rating"] = frame["rating"].astype(float)
    frame["position"] = np.arange(len(frame))
    return frame


def reference_histories(frame, k, label, tie_order="file"):
    """For each raw row: the user's last k positives earlier in (time, file position) order; with
    tie_order 'exclude', only positives of strictly earlier times."""
    frame = frame.sort_values(["timestamp", "position"], kind="stable")
    out = {}
    for row in frame.itertuples():
        earlier = frame[(frame.user_id == row.user_id) & frame.apply(label, axis=1)]
        if tie_order == "exclude":
            earlier = earlier[earlier.timestamp < row.timestamp]
        else:
            earlier = earlier[(earlier.timestamp < row.timestamp) | ((earlier.timestamp == row.timestamp) & (earlier.position < row.position))]
        out[(row.user_id, row.item_id, row.timestamp)] = tuple(earlier.item_id.tolist()[-k:])
    return out


def fast_reference(frame, k):
    """The same as reference_histories (file ties), in one pass, for 100,000 rows."""
    frame = frame.sort_values(["timestamp", "position"], kind="stable")
    seen, out = {}, {}
    for row in frame.itertuples():
        history = seen.setdefault(row.user_id, [])
        out[(row.user_id, row.item_id, row.timestamp)] = tuple(history[-k:])
        if row.rating >= 4:
            history.append(row.item_id)
    return out


def rows_as_tokens(data, part, fields):
    feat = part.inter_feat
    columns = {}
    for field in fields:
        values = feat[field].numpy()
        columns[field] = np.asarray(data.field2id_token[field])[values] if field in data.field2id_token else values
    return columns


def check_histories(data, parts, k, label, reference=None):
    reference = reference or reference_histories(raw_frame(data), k, label)
    tokens = np.asarray(data.field2id_token[data.iid_field])
    checked = 0
    for part in parts:
        cols = rows_as_tokens(data, part, [data.uid_field, data.iid_field, data.time_field])
        histories = part.inter_feat[data.history_field].numpy()
        assert histories.shape[1] == k
        for user, item, time, history in zip(cols["user_id"], cols["item_id"], cols["timestamp"], histories):
            got = tuple(tokens[history[history > 0]])
            assert got == reference[(user, item, float(time))], (user, item, time)
            checked += 1
    return checked


def test_ml100k_labels_text_and_histories_are_exact():
    data, parts = build(history_len=10)
    assert sum(map(len, parts)) == 100000
    frame = raw_frame(data)
    # labels: rating >= 4, row by row
    expected = {(r.user_id, r.item_id): int(r.rating >= 4) for r in frame.itertuples()}
    for part in parts:
        cols = rows_as_tokens(data, part, ["user_id", "item_id"])
        labels = part.inter_feat["label"].numpy()
        assert all(expected[(u, i)] == y for u, i, y in zip(cols["user_id"], cols["item_id"], labels))
    # text: every item's fields exactly as in the .item file (RecBole itself would split on spaces)
    items = pd.read_csv(f"{data.dataset_path}/ml-100k.item", sep="\t", dtype=str, quoting=csv.QUOTE_NONE, keep_default_na=False)
    for token, title, year in zip(items.iloc[:, 0], items.iloc[:, 1], items.iloc[:, 2]):
        item_id = data.token2id("item_id", token)
        assert data.item_text(item_id) == {"movie_title": title, "release_year": year}
    assert check_histories(data, parts, 10, None, reference=fast_reference(raw_frame(data), 10)) == 100000


def test_histories_never_leak_the_future_with_heavy_time_ties(tmp_path):
    rng = np.random.default_rng(7)
    for trial in range(3):
        pairs = rng.permutation([(u, i) for u in range(1, 16) for i in range(1, 31)])[:300]
        rows = [(u, i, int(rng.integers(1, 6)), int(rng.integers(0, 12))) for u, i in pairs]  # 12 distinct times
        name = f"ties{trial}"
        path = write_atomic(tmp_path, name, rows)
        for tie_order in ("file", "exclude"):
            data, parts = build(dataset=name, data_path=path, history_len=4, threshold={"rating": 4}, text_fields=[],
                                history_tie_order=tie_order,
                                eval_args={"split": {"RS": [0.6, 0.2, 0.2]}, "order": "TO", "group_by": None, "mode": "labeled"})
            reference = reference_histories(raw_frame(data), 4, lambda r: r.rating >= 4, tie_order)
            assert check_histories(data, parts, 4, None, reference=reference) == 300
        for part in parts:  # no history item is the target itself
            feat = part.inter_feat
            assert not torch.any(feat["history_item_id"] == feat["item_id"].unsqueeze(1))


interactions = st.lists(
    st.tuples(st.integers(1, 5), st.integers(1, 8), st.integers(1, 5), st.integers(0, 4)),  # few times: many ties
    min_size=10, max_size=40, unique_by=lambda r: (r[0], r[1]),
)


@given(rows=interactions, tie_order=st.sampled_from(["file", "exclude", "item_first_seen"]))
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_histories_hold_only_earlier_positives_in_time_order_property(tmp_path, rows, tie_order):
    """For any data: a row's history is the user's last positives before it (ties as configured), in
    time order, never the row itself or anything later; every row is kept."""
    name = f"prop{abs(hash((tuple(rows), tie_order))) % 10**9}"
    path = write_atomic(tmp_path, name, rows)
    data, parts = build(dataset=name, data_path=path, history_len=3, threshold={"rating": 4}, text_fields=[],
                        history_tie_order=tie_order, user_inter_num_interval="[0,inf)", item_inter_num_interval="[0,inf)",
                        eval_args={"split": {"RS": [0.6, 0.2, 0.2]}, "order": "TO", "group_by": None, "mode": "labeled"})
    frame = raw_frame(data)
    if tie_order == "item_first_seen":  # same-time rows ordered by where each item first appears in the file
        first = frame.drop_duplicates("item_id")[["item_id", "position"]].rename(columns={"position": "first"})
        frame = frame.merge(first, on="item_id").assign(position=lambda f: f["first"]).drop(columns="first")
        tie_order = "file"
    reference = reference_histories(frame, 3, lambda r: r.rating >= 4, tie_order)
    assert check_histories(data, parts, 3, None, reference=reference) == len(rows)


def test_warm_flags_agree_with_the_train_split():
    data, (train, valid, test) = build()
    users = set(train.inter_feat["user_id"].tolist())
    items = set(train.inter_feat["item_id"].tolist())
    assert bool(torch.all(train.inter_feat["warm"] == 1))
    for part in (valid, test):
        feat = part.inter_feat
        expected = [float(u in users and i in items) for u, i in zip(feat["user_id"].tolist(), feat["item_id"].tolist())]
        assert feat["warm"].tolist() == expected
        assert 0 < sum(expected) < len(expected)


def test_time_boundary_split_and_share_split(tmp_path):
    day = 86400
    start = datetime(2002, 1, 1, tzinfo=timezone.utc).timestamp()
    rows = [(u, i, 1 + (u * i) % 5, int(start + (u * 7 + i) * day)) for u in range(1, 9) for i in range(1, 9)]
    path = write_atomic(tmp_path, "tb", rows)
    common = dict(dataset="tb", data_path=path, threshold={"rating": 3}, text_fields=[])
    data, parts = build(eval_args={"split": {"TB": ["2002-02-10", "2002-02-20"]}, "order": "TO", "mode": "labeled"}, **common)
    b1, b2 = (datetime(2002, 2, d, tzinfo=timezone.utc).timestamp() for d in (10, 20))
    times = [p.inter_feat["timestamp"].numpy() for p in parts]
    assert times[0].max() < b1 <= times[1].min() and times[1].max() < b2 <= times[2].min()
    assert sum(map(len, parts)) == len(rows)
    data, parts = build(eval_args={"split": {"TB": ["2002-02-10", "50%"]}, "order": "TO", "mode": "labeled"}, **common)
    after = sum(1 for r in rows if r[3] >= b1)
    assert len(parts[1]) == round(after / 2) and len(parts[1]) + len(parts[2]) == after
    assert parts[1].inter_feat["timestamp"].max() <= parts[2].inter_feat["timestamp"].min()


def test_general_models_train_on_positives_only_and_bpr_never_sees_a_negative_as_positive():
    from recbole.data import data_preparation

    config = Config("BPR", "ml-100k", config_dict=QUIET)
    data = create_dataset(config)
    train, valid, test = data_preparation(config, data)
    assert bool(torch.all(train._dataset.inter_feat["label"] == 1))
    negatives = set()
    full = data.inter_feat
    for u, i, y in zip(full["user_id"].tolist(), full["item_id"].tolist(), full["label"].tolist()):
        if y == 0:
            negatives.add((u, i))
    for batch in train:
        pairs = zip(batch["user_id"].tolist(), batch["item_id"].tolist())
        assert not any(pair in negatives for pair in pairs)
    # evaluation still sees labeled rows of both classes
    assert set(valid._dataset.inter_feat["label"].tolist()) == {0.0, 1.0}


def test_context_models_train_on_both_labels():
    from recbole.data import data_preparation

    config = Config("FM", "ml-100k", config_dict=QUIET)
    train, _, _ = data_preparation(config, create_dataset(config))
    assert set(train._dataset.inter_feat["label"].tolist()) == {0.0, 1.0}
    assert config["train_neg_sample_args"]["distribution"] == "none"


def test_bad_input_gets_errors_that_name_the_file_or_option(tmp_path):
    with pytest.raises(FileNotFoundError, match="dataset folder .*nowhere.*data_path"):
        build(dataset="nowhere", data_path=str(tmp_path))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"empty\.inter.*docs/datasets\.md"):
        build(dataset="empty", data_path=str(tmp_path))
    path = write_atomic(tmp_path, "toy", [(1, 1, 5, 1), (1, 2, 3, 2)], item_rows=[(1, "A", 2000), (2, "B", 2001)])
    with pytest.raises(ValueError, match="text field.*'plot'.*toy.item"):
        build(dataset="toy", data_path=path, text_fields=["plot"])
    with pytest.raises(ValueError, match="threshold field 'score'.*toy.inter"):
        build(dataset="toy", data_path=path, threshold={"score": 4})
    bad = write_atomic(tmp_path, "lab", [(1, 1, 2, 1)], inter_header=["user_id:token", "item_id:token", "label:float", "timestamp:float"])
    with pytest.raises(ValueError, match="label column .* must be 0/1"):
        build(dataset="lab", data_path=bad, threshold=None, load_col=None, text_fields=[])
    with pytest.raises(ValueError, match="the train split is empty.*TB"):
        build(dataset="toy", data_path=path, text_fields=[], threshold={"rating": 4},
              eval_args={"split": {"TB": [1, 100]}, "order": "TO", "mode": "labeled"})


def test_items_without_a_row_in_the_item_file_are_kept_with_a_placeholder(tmp_path):
    path = write_atomic(tmp_path, "holes", [(1, 1, 5, 1), (1, 2, 3, 2), (2, 3, 4, 3), (2, 1, 2, 4), (3, 1, 5, 5), (3, 2, 1, 6), (4, 2, 5, 7), (4, 3, 1, 8)],
                        item_rows=[(1, "A", 2000)])
    data, parts = build(dataset="holes", data_path=path, text_fields=["movie_title"], missing_text_placeholder="???", threshold={"rating": 4},
                        eval_args={"split": {"RS": [0.5, 0.25, 0.25]}, "order": "TO", "group_by": None, "mode": "labeled"})
    assert sum(map(len, parts)) == 8
    assert data.item_text(data.token2id("item_id", "2")) == {"movie_title": "???"}
    assert data.item_text(data.token2id("item_id", "1")) == {"movie_title": "A"}
