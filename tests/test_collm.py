from pathlib import Path

import pytest
import torch
from recbole.data import data_preparation
from recbole.utils import init_seed

from recbole_cora import run_recbole_cora
from recbole_cora.config import Config
from recbole_cora.stages import run_cf_stage
from recbole_cora.model.llm_recommender.collm import CoLLM
from recbole_cora.utils import create_dataset, get_trainer

from conftest import SMALL_CORA

SMALL = {**SMALL_CORA, "train_rows_per_epoch": 48, "eval_rows": 64}


def build(tiny_llm, **extra):
    config = Config("CoLLM", "ml-100k", config_dict={**SMALL, "llm_path": tiny_llm, **extra})
    init_seed(config["seed"], config["reproducibility"])
    dataset = create_dataset(config)
    train, valid, test = data_preparation(config, dataset)
    config["cf_stage_dir"] = str(run_cf_stage(config, dataset))
    return config, CoLLM(config, train._dataset), (train, valid, test)


def batch_of(data, n=12):
    return data.collate_fn(list(range(n)))


@pytest.mark.parametrize("norm", ["none", "standardize"])
def test_mapped_cf_vectors_sit_exactly_at_each_samples_placeholders(tiny_llm, norm):
    config, model, (train, _, _) = build(tiny_llm, cf_input_norm=norm)
    batch = batch_of(train)
    ids, mask = model.cf_prompts.batch(batch)
    embeds = model.input_embeddings(batch, ids, mask)
    plain = model.llm.get_input_embeddings()(ids)
    user, item = model.cf_encoder(batch["user_id"], batch["item_id"])
    if norm == "standardize":  # each dimension by its frozen table's mean and std (padding row 0 left out)
        users, items = model.cf_encoder.user_table[1:], model.cf_encoder.item_table[1:]
        user, item = (user - users.mean(0)) / users.std(0), (item - items.mean(0)) / items.std(0)
    mapped_user, mapped_item = model.mapping(user), model.mapping(item)
    for row in range(len(ids)):
        marks = ((ids[row] == model.cf_prompts.placeholder_id) & (mask[row] == 1)).nonzero().flatten().tolist()
        assert len(marks) == 2
        assert torch.allclose(embeds[row, marks[0]], mapped_user[row], atol=1e-6)  # {user_emb} comes first
        assert torch.allclose(embeds[row, marks[1]], mapped_item[row], atol=1e-6)
        others = [k for k in range(ids.shape[1]) if k not in marks]
        assert torch.equal(embeds[row, others], plain[row, others])
    assert "the feature <unk>" in model.cf_prompts.text(batch["history_item_id"][0].tolist(), int(batch["item_id"][0]))


def test_step_2_trains_only_the_mapping(tiny_llm):
    config, model, (train, valid, _) = build(tiny_llm)
    model.set_stage(1)
    trainer = get_trainer(config["MODEL_TYPE"], "CoLLM", config)(config, model)
    trainer.fit(train, valid, saved=False)
    assert {n for n, p in model.named_parameters() if p.requires_grad} == {
        n for n, _ in model.llm.named_parameters(prefix="llm") if ".lora_" in n
    }
    before = {n: t.clone() for n, t in model.state_dict().items() if not n.startswith("mapping.")}
    mapping_before = {n: t.clone() for n, t in model.mapping.state_dict().items()}
    model.set_stage(2)
    assert {n for n, p in model.named_parameters() if p.requires_grad} == {f"mapping.{n}" for n in mapping_before}
    trainer = get_trainer(config["MODEL_TYPE"], "CoLLM", config)(config, model)
    trainer.fit(train, valid, saved=False)
    for name, tensor in before.items():  # the LLM and the step-1 LoRA are bitwise unchanged
        assert torch.equal(model.state_dict()[name], tensor), name
    assert any(not torch.equal(model.mapping.state_dict()[n], t) for n, t in mapping_before.items())


def test_both_steps_from_one_command_and_step_2_from_a_saved_step_1(tiny_llm, tmp_path):
    options = {**SMALL, "llm_path": tiny_llm, "cf_checkpoint_dir": str(tmp_path / "cf")}
    out = run_recbole_cora("CoLLM", "ml-100k", config_dict=options)
    assert out["test_result"]["rows"] == 64 and set(out["results"]) == {"CoLLM", "LightGCN (frozen CF encoder)", "ZeroShot (frozen LLM)"}
    step1 = sorted(Path("saved").glob("CoLLM-*-step1"))
    assert step1 and sorted(Path("saved").glob("CoLLM-*-step2"))
    config, model, _ = build(tiny_llm, collm_stage=2, collm_stage1_dir=str(step1[-1]), cf_checkpoint_dir=str(tmp_path / "cf"))
    from safetensors.torch import load_file

    saved = load_file(str(step1[-1] / "trainable.safetensors"))
    state = model.state_dict()
    assert saved and all(torch.equal(state[name], tensor) for name, tensor in saved.items())
    assert model.training_stages() == [2]
    # the two-step run loads back whole: step 1's LoRA and step 2's mapping, and scores its test rows as it did
    from recbole_cora import load_run

    loaded = load_run(out["results_dir"])
    assert loaded.path.name.endswith("-step2")
    assert all(torch.equal(loaded.model.state_dict()[name], tensor) for name, tensor in saved.items())
    again = loaded.evaluate("test")
    assert all(again[key] == out["test_result"][key] for key in ("auc", "uauc", "logloss", "rows"))
    with pytest.raises(ValueError, match="collm_stage1_dir"):
        build(tiny_llm, collm_stage=2, cf_checkpoint_dir=str(tmp_path / "cf"))
