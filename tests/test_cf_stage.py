import json

import numpy as np
import pytest
import torch
from recbole.data import data_preparation

from recbole_cora.config import Config
from recbole_cora.model.encoders import CFCheckpointError, FrozenCFEncoder
from recbole_cora.stages import run_cf_stage
from recbole_cora.utils import create_dataset

from conftest import QUIET
from helpers import write_atomic

CF = {"cf_config": {"epochs": 2, "embedding_size": 16, "train_batch_size": 256}}


def small_data(tmp_path, name="cfsmall", shuffle_seed=None, n_users=40, n_items=30, tag=""):
    rng = np.random.default_rng(3)
    rows = []
    for u in range(1, n_users + 1):
        for i in rng.choice(np.arange(1, n_items + 1), size=12, replace=False):
            rows.append((f"u{u}", f"i{i}", int(rng.integers(1, 6)), int(rng.integers(0, 1000))))
    if shuffle_seed is not None:  # same interactions, another file order: RecBole remaps ids differently
        rows = [rows[k] for k in np.random.default_rng(shuffle_seed).permutation(len(rows))]
    return write_atomic(tmp_path / f"{name}{shuffle_seed}{tag}", name, rows)


def config_for(path, model="FM", name="cfsmall", **extra):
    options = {**QUIET, **CF, "data_path": path, "threshold": {"rating": 4}, "cf_checkpoint_dir": "cf",
               "eval_args": {"split": {"RS": [0.7, 0.15, 0.15]}, "order": "TO", "group_by": None, "mode": "labeled"}}
    options.update(extra)
    return Config(model, name, config_dict=options)


def test_cf_stage_trains_once_saves_everything_and_is_reused(tmp_path):
    config = config_for(small_data(tmp_path))
    dataset = create_dataset(config)
    dataset.build()
    stage = run_cf_stage(config, dataset)
    assert {p.name for p in stage.iterdir()} >= {"embeddings.safetensors", "recbole_model.pth", "result.json"}
    result = json.loads((stage / "result.json").read_text())
    assert result["model"] == "LightGCN" and 0 <= result["test"]["auc"] <= 1 and "cold_auc" in result["test"]
    stamp = (stage / "embeddings.safetensors").stat().st_mtime_ns
    assert run_cf_stage(config, dataset) == stage  # found again, not retrained
    assert (stage / "embeddings.safetensors").stat().st_mtime_ns == stamp
    encoder = FrozenCFEncoder.from_stage(stage, dataset)
    assert encoder.user_table.shape == (dataset.user_num, 16) and encoder.item_table.shape == (dataset.item_num, 16)
    assert not any(p.requires_grad for p in encoder.parameters())
    # another CF option keys another stage
    other = run_cf_stage(config_for(config["data_path"].rsplit("/", 1)[0], cf_config={**CF["cf_config"], "embedding_size": 8}), dataset)
    assert other != stage


def test_embeddings_are_aligned_by_token_not_by_internal_id(tmp_path):
    config_a = config_for(small_data(tmp_path))
    data_a = create_dataset(config_a)
    data_a.build()
    stage = run_cf_stage(config_a, data_a)
    config_b = config_for(small_data(tmp_path, shuffle_seed=5))
    data_b = create_dataset(config_b)
    data_b.build()
    assert data_b.fingerprint == data_a.fingerprint  # the same split, by its rows
    assert list(data_a.field2id_token["user_id"]) != list(data_b.field2id_token["user_id"])  # other id order
    enc_a = FrozenCFEncoder.from_stage(stage, data_a)
    enc_b = FrozenCFEncoder.from_stage(stage, data_b)
    for field, table in (("user_id", "user_table"), ("item_id", "item_table")):
        for token in data_a.field2id_token[field][1:]:
            a = getattr(enc_a, table)[data_a.token2id(field, token)]
            b = getattr(enc_b, table)[data_b.token2id(field, token)]
            assert torch.equal(a, b), token
    users = torch.tensor([data_b.token2id("user_id", "u3")])
    items = torch.tensor([data_b.token2id("item_id", "i7")])
    u, i = enc_b(users, items)
    assert torch.equal(u[0], enc_a.user_table[data_a.token2id("user_id", "u3")])
    assert torch.equal(i[0], enc_a.item_table[data_a.token2id("item_id", "i7")])


def test_a_stage_for_another_split_dataset_or_id_mapping_is_refused(tmp_path):
    path = small_data(tmp_path)
    config = config_for(path)
    dataset = create_dataset(config)
    dataset.build()
    stage = run_cf_stage(config, dataset)
    other_config = config_for(path, eval_args={"split": {"RS": [0.5, 0.25, 0.25]}, "order": "TO", "group_by": None, "mode": "labeled"})
    other_split = create_dataset(other_config)
    train, _, _ = data_preparation(other_config, other_split)
    with pytest.raises(CFCheckpointError, match="another split"):
        FrozenCFEncoder.from_stage(stage, other_split)
    with pytest.raises(CFCheckpointError, match="another split"):  # what a model receives: the train part
        FrozenCFEncoder.from_stage(stage, train._dataset)
    other_name = create_dataset(config_for(small_data(tmp_path, name="renamed"), name="renamed"))
    other_name.build()
    with pytest.raises(CFCheckpointError, match="trained on dataset 'cfsmall', not 'renamed'"):
        FrozenCFEncoder.from_stage(stage, other_name)
    more_users = create_dataset(config_for(small_data(tmp_path, n_users=41, tag="more")))
    more_users.build()
    with pytest.raises(CFCheckpointError, match="no embedding for 1 user_id token"):
        FrozenCFEncoder.from_stage(stage, more_users, check_fingerprint=False)
    (stage / "embeddings.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CFCheckpointError, match="truncated or not a CF stage"):
        FrozenCFEncoder.from_stage(stage, dataset)


def test_the_llm_models_training_options_do_not_leak_into_the_cf_stage(tmp_path):
    from recbole_cora.stages import cf_stage_config

    path = small_data(tmp_path)
    config = Config("FM", "cfsmall", config_dict={**QUIET, "data_path": path, "threshold": {"rating": 4}, "epochs": 1,
                                                   "learning_rate": 0.5, "time_window": [0, 500],
                                                   "cf_config": {"embedding_size": 8}}, cmd_args=["--train_batch_size=7"])
    cf = cf_stage_config(config)
    assert cf["model"] == "LightGCN" and cf["epochs"] == 300 and cf["learning_rate"] == 0.001  # RecBole's LightGCN
    assert cf["train_batch_size"] == 2048 and cf["embedding_size"] == 8
    assert cf["data_path"] == config["data_path"] and cf["time_window"] == [0, 500]
    assert cf["threshold"] == {"rating": 4} and cf["eval_args"] == config["eval_args"]
