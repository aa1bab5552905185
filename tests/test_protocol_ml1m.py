"""CoLLM's ML-1M protocol from the atomic files in ../shared/datasets, compared with the reference split
(../shared/reference/collm-ml-1m.zip) row by row: title with year, timestamp, label, warm flag
(the reference's not_cold) and the last 50 history titles."""

import zipfile
from collections import Counter

import pandas as pd
import pytest

from recbole_cora.config import Config
from recbole_cora.utils import create_dataset

from conftest import QUIET, shared_path

K = 50  # history items compared per row (the reference keeps them all; prompts use the last 10)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    folder = tmp_path_factory.mktemp("collm")
    with zipfile.ZipFile(shared_path("reference", "collm-ml-1m.zip")) as archive:
        archive.extractall(folder)
    return {split: pd.read_pickle(next(folder.rglob(f"{split}_ood2.pkl"))) for split in ("train", "valid", "test")}


def reference_rows(frame):
    return Counter(
        (title, int(ts), int(label), int(warm), tuple(his[1:][-K:]))  # his_title starts with a '' pad
        for title, ts, label, warm, his in zip(
            frame["title"], frame["timestamp"], frame["label"], frame["not_cold"], frame["his_title"]
        )
    )


def our_rows(data, part):
    title = [f"{t['movie_title']} ({t['release_year']})" for t in data.item_texts]
    feat = part.inter_feat
    return Counter(
        (title[i], int(ts), int(y), int(warm), tuple(title[h] for h in history if h > 0))
        for i, ts, y, warm, history in zip(
            feat["item_id"].tolist(), feat["timestamp"].tolist(), feat["label"].tolist(),
            feat["warm"].tolist(), feat["history_item_id"].tolist(),
        )
    )


def test_ml1m_split_and_histories_match_the_collm_reference(reference):
    config = Config("FM", "ml-1m", config_dict={**QUIET, "data_path": str(shared_path("datasets")), "history_len": K})
    data = create_dataset(config)
    parts = data.build()
    assert [len(p) for p in parts] == [33891, 10401, 7331]
    for name, part in zip(("train", "valid", "test"), parts):
        ours, theirs = our_rows(data, part), reference_rows(reference[name])
        matched = sum((ours & theirs).values())
        assert matched == sum(theirs.values()), f"{name}: {matched} of {sum(theirs.values())} rows match"
