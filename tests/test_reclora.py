import copy
import os
import shutil

import pytest
import torch
from recbole.data import data_preparation
from recbole.utils import init_seed

from recbole_cora import run_recbole_cora
from recbole_cora.recbole_files import UntrustedCheckpointError
from recbole_cora.config import Config
from recbole_cora.data.rows import fixed_row_subset
from recbole_cora.model.encoders import CFCheckpointError, FrozenDINEncoder
from recbole_cora.model.llm_recommender.reclora import RecLoRA
from recbole_cora.stages import din_stage_config, prepare_stages, run_din_stage
from recbole_cora.utils import create_dataset

from conftest import QUIET
from helpers import answer_scores

# A small RecLoRA: ml-100k's last weeks, a long history of 8 (the LLM sees 3), a small DIN, 4 meta-LoRAs.
SMALL_RECLORA = {
    **QUIET, "time_window": ["1998-03-01", "1998-05-01"], "history_len": 8, "prompt_history_len": 3,
    "num_meta_loras": 4, "gate_hidden_size": 16, "lora_rank": 4, "lora_alpha": 8, "epochs": 1, "eval_batch_size": 64,
    "reclora_encoder_config": {"epochs": 1, "embedding_size": 8, "mlp_hidden_size": [32, 16], "train_batch_size": 512},
    "cf_config": {"epochs": 3, "embedding_size": 16},
}


@pytest.fixture(scope="session")
def stage_root(tmp_path_factory):
    """One folder of frozen-recommender stages for the whole session: DIN is trained once, then found."""
    return str(tmp_path_factory.mktemp("stages"))


def build(tiny_llm, stage_root, **extra):
    options = {**SMALL_RECLORA, "llm_path": tiny_llm, "cf_checkpoint_dir": stage_root, **extra}
    config = Config("RecLoRA", "ml-100k", config_dict=options)
    init_seed(config["seed"], config["reproducibility"])
    dataset = create_dataset(config)
    train, valid, test = data_preparation(config, dataset)
    prepare_stages(config, dataset, RecLoRA)  # as the pipeline does: the model only reads the finished stage
    torch.manual_seed(0)
    return config, RecLoRA(config, train._dataset), (train, valid, test)


def first_batch(data, rows=None):
    batch = data.collate_fn(list(rows if rows is not None else range(16)))
    return batch[0] if isinstance(batch, tuple) else batch


def randomise_B(model, std=0.5):
    for B in model.lora.B.values():
        B.data.normal_(0, std)


def test_zero_B_scores_equal_the_frozen_llm_yes_logits(tiny_llm, stage_root):
    config, model, (train, _, _) = build(tiny_llm, stage_root)
    model.eval()
    batch = first_batch(train)
    ids, mask = model.prompts.batch(batch)
    plain = answer_scores(model, ids, mask)
    assert torch.equal(model(batch), plain)
    mixture = model.mixture(batch)
    assert mixture.shape == (16, 2 * model.llm.config.num_hidden_layers, 4)  # q and v of every layer
    assert torch.allclose(mixture.sum(-1), torch.ones(16, mixture.shape[1]))
    assert all(a.abs().sum() > 0 for a in model.lora.A.values())  # only B is zero at the start


def test_uniform_gates_apply_the_average_lora_to_every_sample(tiny_llm, stage_root):
    config, model, (train, _, _) = build(tiny_llm, stage_root)
    model.eval()
    randomise_B(model)
    for gate in model.gates.gates.values():  # zero logits: softmax gives 1/N to every meta-LoRA
        gate[-1].weight.data.zero_()
        gate[-1].bias.data.zero_()
    batch = first_batch(train)
    assert torch.allclose(model.mixture(batch), torch.full((16, len(model.lora.keys), 4), 0.25))
    scores = model(batch)
    model.lora.remove()
    merged = copy.deepcopy(model.llm)
    modules = dict(merged.named_modules())
    for name in model.lora.module_names:
        key = name.replace(".", "__")
        A_avg, B_avg = model.lora.A[key].data.mean(0), model.lora.B[key].data.mean(0)
        modules[name].weight.data += model.lora.scaling * (A_avg @ B_avg).t()  # W + (alpha/r) (A_avg B_avg)^T
    ids, mask = model.prompts.batch(batch)
    expected = answer_scores(model, ids, mask, llm=merged)
    assert torch.allclose(scores, expected, atol=1e-4), (scores, expected)
    plain = answer_scores(model, ids, mask)
    assert not torch.allclose(scores, plain, atol=1e-3)


def test_the_llm_sees_the_short_history_and_din_the_long_one(tiny_llm, stage_root):
    config, model, (train, _, _) = build(tiny_llm, stage_root)
    model.eval()
    randomise_B(model)
    data = train._dataset
    lengths = (train.collate_fn(list(range(len(data))))["history_item_id"] > 0).sum(1)
    row = int(torch.nonzero(lengths == 8)[0])  # a row with a full long history
    batch = first_batch(train, [row, row])
    history = batch["history_item_id"][0].tolist()
    text = model.prompts.text([i for i in history if i > 0][-3:], batch["item_id"][0].item())
    assert model.tokenizer.decode(model.prompts.batch(batch)[0][0], skip_special_tokens=True) == text
    assert all(f'"{data.item_title(i)}"' in text for i in history[-3:])
    assert f'"{data.item_title(history[0])}"' not in text  # older items reach DIN only
    # the second sample differs only in its older history: the same prompt, another user representation
    batch["history_item_id"][1, :5] = torch.tensor([i for i in range(1, 200) if i not in history][:5])
    assert torch.equal(*model.prompts.batch(batch)[0])
    u = model.user_representation(batch)
    assert not torch.allclose(u[0], u[1])
    mixture = model.mixture(batch)
    assert not torch.allclose(mixture[0], mixture[1])
    scores = model(batch)
    assert not torch.allclose(scores[0], scores[1], atol=1e-5)  # different users, different effective weights
    key = model.lora.keys[0]
    A, B = model.lora.mixed(key, mixture[:, 0])
    assert not torch.allclose(A[0] @ B[0], A[1] @ B[1])


def test_din_stage_trains_on_the_labeled_rows_with_the_long_history(tiny_llm):
    config = Config("RecLoRA", "ml-100k", config_dict={**SMALL_RECLORA, "llm_path": tiny_llm, "epochs": 7})
    din = din_stage_config(config)
    assert din["model"] == "DIN" and din["train_neg_sample_args"]["distribution"] == "none"  # labels, no sampled negatives
    assert din["MAX_ITEM_LIST_LENGTH"] == 8 and din["epochs"] == 1 and din["embedding_size"] == 8  # not the LLM's epochs
    assert din["time_window"] == config["time_window"] and din["eval_args"] == config["eval_args"]
    train, _, _ = data_preparation(din, create_dataset(din))
    rows = train.collate_fn(list(range(len(train._dataset))))
    rows = rows[0] if isinstance(rows, tuple) else rows
    assert len(rows) == len(train._dataset)  # the loader adds no sampled negatives
    assert rows["item_id_list"].shape[1] == 8 and set(rows["label"].unique().tolist()) == {0.0, 1.0}
    llm_train, _, _ = data_preparation(config, create_dataset(config))
    assert len(train._dataset) == len(llm_train._dataset)  # every labeled train row, negatives included


def test_din_representation_is_its_final_hidden_state(tiny_llm, stage_root):
    config, model, (train, _, _) = build(tiny_llm, stage_root)
    batch = first_batch(train)
    encoder = model.cf_encoder
    assert isinstance(encoder, FrozenDINEncoder) and encoder.cf_model == "DIN"
    u = model.user_representation(batch)
    assert u.shape == (16, 16)  # the last of mlp_hidden_size [32, 16]
    logits = encoder.din.dnn_predict_layers(u).squeeze(-1)
    assert torch.allclose(torch.sigmoid(logits.double()), encoder.predict(batch))
    encoder.to("meta")  # DIN's attention mask (a plain tensor in RecBole) follows the module's device
    assert encoder.din.attention.mask_mat.device.type == "meta" and encoder.user_index.device.type == "meta"


def test_a_training_step_changes_only_trainable_parts_and_reaches_all_of_them(tiny_llm, stage_root):
    config, model, (train, _, _) = build(tiny_llm, stage_root)
    frozen = {name: t.clone() for name, t in model.state_dict().items() if name.startswith(("llm.", "cf_encoder."))}
    assert any(".running_mean" in name for name in frozen)  # DIN's batch norm statistics are checked too
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith(("lora.", "gates.")) for n in trainable)
    assert set(model.trainable_state_dict()) == set(trainable)
    optimizer = torch.optim.AdamW(trainable.values(), lr=1e-2)
    model.train()
    assert not model.llm.training and not model.cf_encoder.din.training
    for step in range(2):
        optimizer.zero_grad()
        model.calculate_loss(first_batch(train)).backward()
        assert all(p.grad is not None for p in trainable.values())
        optimizer.step()
    # B starts at 0, so the gates' and A's gradients are 0 at step 1 and flow from step 2 on
    assert all(p.grad.abs().sum() > 0 for p in trainable.values())
    for name, before in frozen.items():
        assert torch.equal(model.state_dict()[name], before), name


def test_few2many_draws_one_fixed_uniform_subset_of_the_training_rows(tiny_llm, stage_root):
    config, model, (train, _, _) = build(tiny_llm, stage_root, llm_train_samples=500)
    n = len(train._dataset)
    rows = model.train_row_subset
    assert len(rows) == 500 == len(set(rows)) and all(0 <= r < n for r in rows)
    assert rows == fixed_row_subset(n, 500, config["seed"])  # drawn once with the seed: the same every time
    assert rows != fixed_row_subset(n, 500, config["seed"] + 1)
    assert len(fixed_row_subset(n, 0.1, config["seed"])) == round(0.1 * n)
    assert fixed_row_subset(n, None, 0) is None and fixed_row_subset(n, n + 1, 0) is None
    assert max(rows) > n / 2 and min(rows) < n / 2  # spread over the whole split


def test_cf_user_embedding_as_the_representation(tiny_llm, stage_root):
    config, model, (train, _, _) = build(tiny_llm, stage_root, reclora_encoder="cf")
    batch = first_batch(train)
    assert model.cf_encoder.cf_model == "LightGCN" and "LightGCN" in config["cf_stage_dir"]
    assert torch.equal(model.user_representation(batch), model.cf_encoder.user_table[batch["user_id"]])
    model.eval()
    ids, mask = model.prompts.batch(batch)
    assert torch.equal(model(batch), answer_scores(model, ids, mask))


def test_run_recbole_cora_reports_all_warm_cold_with_the_din_row(tiny_llm, stage_root):
    options = {**SMALL_RECLORA, "llm_path": tiny_llm, "cf_checkpoint_dir": stage_root,
               "train_rows_per_epoch": 64, "eval_rows": 200}
    out = run_recbole_cora("RecLoRA", "ml-100k", config_dict=options)
    test = out["test_result"]
    assert test["rows"] == 200 and test["warm_rows"] + test["cold_rows"] == 200
    for group in ("", "warm_", "cold_"):
        assert 0.0 <= test[f"{group}auc"] <= 1.0 and 0.0 <= test[f"{group}uauc"] <= 1.0
        assert test[f"{group}logloss"] > 0
    assert set(out["results"]) == {"RecLoRA", "DIN (frozen CF encoder)", "ZeroShot (frozen LLM)"}
    assert out["results"]["DIN (frozen CF encoder)"]["rows"] == 200  # the same rows as RecLoRA's
    for group in ("all", "warm", "cold"):
        assert f"| RecLoRA | {group} |" in out["table"]


def test_din_stage_is_reused_and_refused_for_another_split_or_a_pickle_it_cannot_read_safely(tiny_llm, stage_root, tmp_path):
    config, model, _ = build(tiny_llm, stage_root)
    stage = config["reclora_stage_dir"]
    stamp = os.stat(os.path.join(stage, "encoder.json")).st_mtime_ns
    dataset = create_dataset(config)
    dataset.build()
    assert str(run_din_stage(config, dataset)) == stage  # found again, not retrained
    assert os.stat(os.path.join(stage, "encoder.json")).st_mtime_ns == stamp
    other_split = {"split": {"RS": [0.7, 0.15, 0.15]}, "order": "TO", "group_by": None, "mode": "labeled"}
    other_config = Config("RecLoRA", "ml-100k", config_dict={**SMALL_RECLORA, "llm_path": tiny_llm,
                                                            "cf_checkpoint_dir": stage_root, "eval_args": other_split})
    other_train, _, _ = data_preparation(other_config, create_dataset(other_config))
    with pytest.raises(CFCheckpointError, match="another split"):
        FrozenDINEncoder.from_stage(stage, other_train._dataset)
    with pytest.raises(CFCheckpointError, match="differs from the model's"):
        run_din_stage(config, other_train._dataset)  # this run's stage, another run's split
    other_config["reclora_stage_dir"] = stage
    with pytest.raises(CFCheckpointError, match="another split"):
        RecLoRA(other_config, other_train._dataset)
    # the stage is read from its safetensors + JSON pair: a hostile recbole_model.pth beside it is never opened
    from helpers import write_hostile_checkpoint
    from recbole_cora.recbole_files import sidecars

    copied = tmp_path / "din-stage"
    shutil.copytree(stage, copied)
    marker = tmp_path / "marker"
    write_hostile_checkpoint(copied / "recbole_model.pth", marker, "open")
    FrozenDINEncoder.from_stage(copied, dataset)
    for path in sidecars(copied / "recbole_model.pth"):
        path.unlink()
    with pytest.raises(UntrustedCheckpointError, match="--trust_checkpoint"):
        FrozenDINEncoder.from_stage(copied, dataset)
    shared = Config("RecLoRA", "ml-100k", config_dict={**SMALL_RECLORA, "llm_path": tiny_llm, "cf_checkpoint_dir": stage_root,
                                                     "reclora_stage_dir": str(copied)})  # a stage a colleague shares
    shared_train, _, _ = data_preparation(shared, create_dataset(shared))
    with pytest.raises(UntrustedCheckpointError, match="--trust_checkpoint"):
        RecLoRA(shared, shared_train._dataset)
    assert not marker.exists()


def test_the_trainer_trains_the_llm_on_the_few2many_rows_only(tiny_llm, stage_root):
    from recbole_cora.utils import get_trainer

    config, model, (train, _, _) = build(tiny_llm, stage_root, llm_train_samples=40)
    trainer = get_trainer(config["MODEL_TYPE"], "RecLoRA", config)(config, model)
    assert sorted(trainer.train_rows(train, 0)) == model.train_row_subset
    config["train_rows_per_epoch"] = 16  # per-epoch sampling then draws from the fixed rows
    assert set(trainer.train_rows(train, 1)) < set(model.train_row_subset)
