import json
import math

import pytest
import torch
from recbole.data import data_preparation
from recbole.utils import init_seed

from recbole_cora import run_recbole_cora
from recbole_cora.config import Config
from recbole_cora.stages import run_cf_stage
from recbole_cora.model.llm_recommender.cora import CoRA
from recbole_cora.training.sampling import length_bucketed, prompt_lengths
from recbole_cora.training import LLMTrainer
from recbole_cora.utils import create_dataset, get_trainer

from conftest import SMALL_CORA
from helpers import answer_scores, assert_same_scores_and_gradients, offload_options


def build(tiny_llm, **extra):
    config = Config("CoRA", "ml-100k", config_dict={**SMALL_CORA, "llm_path": tiny_llm, **extra})
    init_seed(config["seed"], config["reproducibility"])  # a random split (RO) must be the CF stage's too
    dataset = create_dataset(config)
    train, valid, test = data_preparation(config, dataset)
    config["cf_stage_dir"] = str(run_cf_stage(config, dataset))
    torch.manual_seed(0)
    return config, CoRA(config, train._dataset), (train, valid, test)


def first_batch(data, n=16):
    batch = data.collate_fn(list(range(n)))
    return batch[0] if isinstance(batch, tuple) else batch  # eval loaders return (interaction, ...)


def test_zero_P_scores_equal_the_frozen_llm_yes_logits(tiny_llm):
    config, model, (train, _, _) = build(tiny_llm)
    model.eval()
    batch = first_batch(train)
    ids, mask = model.prompts.batch(batch)
    plain = answer_scores(model, ids, mask)
    assert torch.equal(model(batch), plain)
    assert model.query_generator(*model.cf_encoder(batch["user_id"], batch["item_id"])).abs().sum() > 0  # A_b is not 0


def test_a_training_step_changes_only_trainable_parts_and_reaches_all_of_them(tiny_llm):
    config, model, (train, _, _) = build(tiny_llm)
    frozen = {name: t.clone() for name, t in model.state_dict().items() if name.startswith(("llm.", "cf_encoder."))}
    trainable = dict(model.named_parameters())
    trainable = {n: p for n, p in trainable.items() if p.requires_grad}
    assert trainable and all(n.startswith(("lora.", "query_generator.")) for n in trainable)
    optimizer = torch.optim.AdamW(trainable.values(), lr=1e-2)
    model.train()
    assert not model.llm.training  # the frozen LLM never trains (no dropout)
    for step in range(2):
        optimizer.zero_grad()
        model.calculate_loss(first_batch(train)).backward()
        assert all(p.grad is not None for p in trainable.values())
        optimizer.step()
    # P starts at 0, so the query generator's gradient is 0 at step 1 and flows from step 2 on
    assert all(p.grad.abs().sum() > 0 for n, p in trainable.items() if n.startswith("query_generator.to_lora"))
    for name, before in frozen.items():
        assert torch.equal(model.state_dict()[name], before), name


def test_cora_learns_on_a_small_ml100k_slice(tiny_llm):
    random_split = {"split": {"RS": [0.8, 0.1, 0.1]}, "order": "RO", "group_by": "user", "mode": "labeled"}
    options = {"eval_args": random_split, "epochs": 2, "train_rows_per_epoch": 1024, "eval_rows": 600,
               "learning_rate": 3e-3, "cf_config": {"epochs": 30, "embedding_size": 16},
               "time_window": ["1998-01-01", "1998-05-01"]}
    config, model, (train, valid, test) = build(tiny_llm, **options)
    trainer = get_trainer(config["MODEL_TYPE"], "CoRA", config)(config, model)
    assert isinstance(trainer, LLMTrainer)
    probe = first_batch(train, 256)
    with torch.no_grad():
        model.eval()
        before = model.calculate_loss(probe).item()
    model.eval()
    with model.zero_shot():  # the frozen LLM's own score on the same valid rows: what training must beat
        zero_shot = trainer.evaluate_model(model, valid, False)
    best, valid_result = trainer.fit(train, valid)
    with torch.no_grad():
        model.eval()
        after = model.calculate_loss(probe).item()
    assert after < before - 0.01, (before, after)
    assert valid_result["auc"] > 0.6, valid_result
    assert valid_result["auc"] > zero_shot["auc"] + 0.1, (zero_shot, valid_result)


def test_checkpoints_hold_only_trainable_parameters_and_reload_without_pickle(tiny_llm):
    config, model, (train, valid, test) = build(tiny_llm, train_rows_per_epoch=64)
    trainer = get_trainer(config["MODEL_TYPE"], "CoRA", config)(config, model)
    trainer.fit(train, valid)
    folder = trainer.saved_model_file
    from pathlib import Path

    files = sorted(p.name for p in Path(folder).iterdir())
    assert files == ["config.json", "trainable.safetensors"]
    from safetensors.torch import load_file

    saved = load_file(str(Path(folder) / "trainable.safetensors"))
    assert set(saved) == set(model.trainable_state_dict())
    assert not any(name.startswith(("llm.", "cf_encoder.")) for name in saved)
    assert json.loads((Path(folder) / "config.json").read_text())["config"]["model"] == "CoRA"
    batch = first_batch(valid)
    model.eval()
    expected = model.predict(batch)
    torch.manual_seed(123)
    fresh = CoRA(config, train._dataset)
    fresh.eval()
    assert not torch.allclose(fresh.predict(batch), expected)
    get_trainer(config["MODEL_TYPE"], "CoRA", config)(config, fresh).load_best_model(folder)
    assert torch.equal(fresh.predict(batch), expected)


def test_same_seed_gives_identical_metrics(tiny_llm):
    options = {"llm_path": tiny_llm, "train_rows_per_epoch": 96, "eval_rows": 200}
    first = run_recbole_cora("CoRA", "ml-100k", config_dict={**SMALL_CORA, **options})
    second = run_recbole_cora("CoRA", "ml-100k", config_dict={**SMALL_CORA, **options})
    assert first["test_result"]["rows"] == 200
    for key in ("auc", "uauc", "logloss", "warm_auc", "cold_auc"):
        a, b = first["test_result"][key], second["test_result"][key]
        assert (math.isnan(a) and math.isnan(b)) or a == b, key
    assert set(first["results"]) == {"CoRA", "LightGCN (frozen CF encoder)", "ZeroShot (frozen LLM)"}
    assert first["results"]["LightGCN (frozen CF encoder)"]["rows"] == 200  # the same rows as CoRA's


def test_prompts_show_exactly_the_history_in_time_order(tiny_llm):
    config, model, (train, _, _) = build(tiny_llm)
    data = train._dataset
    batch = first_batch(train, 64)
    for history, target in zip(batch["history_item_id"].tolist(), batch["item_id"].tolist()):
        text = model.prompts.text(history, target)
        titles = [f'"{data.item_title(i)}"' for i in history if i > 0]
        shown = ", ".join(titles) if titles else config["prompt_empty_history"]
        assert f"movies: {shown}. Using" in text and f'titled "{data.item_title(target)}"?' in text
        ids = model.prompts.token_ids([history], [target])[0]
        assert model.tokenizer.decode(ids, skip_special_tokens=True) == text


def test_long_prompts_drop_the_oldest_history_first(tiny_llm):
    config, model, (train, _, _) = build(tiny_llm)
    prompts = model.prompts
    history, target = [5, 6, 7, 8, 9, 10, 11, 12, 13, 14], 20
    full = len(prompts.token_ids([history], [target])[0])
    prompts.max_tokens = full - 1
    prompts._cache.clear()
    ids = prompts.token_ids([history], [target])[0]
    assert len(ids) <= full - 1 and prompts.truncated == 1
    assert prompts.tokenizer.decode(ids, skip_special_tokens=True) == prompts.text(history[1:], target)
    prompts.max_tokens = 5
    with pytest.raises(ValueError, match="max_prompt_tokens"):
        prompts.token_ids([[]], [21])


def test_bad_prompt_templates_are_refused(tiny_llm):
    with pytest.raises(ValueError, match=r"\{target\}"):
        build(tiny_llm, prompt_template="#Question: {history}? #Answer:")
    with pytest.raises(ValueError, match="unknown slot"):
        build(tiny_llm, prompt_template="{history} {user} {target} #Answer:")


def test_bfloat16_llm_with_device_map_trains(tiny_llm):
    config, model, (train, valid, _) = build(tiny_llm, llm_dtype="bfloat16", device_map="auto", train_rows_per_epoch=32, eval_rows=64)
    assert model.llm.dtype == torch.bfloat16
    model.train()
    loss = model.calculate_loss(first_batch(train))
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in model.parameters() if p.requires_grad)
    trainer = get_trainer(config["MODEL_TYPE"], "CoRA", config)(config, model)  # the model is not moved
    _, result = trainer.fit(train, valid)
    assert result["rows"] == 64 and 0 <= result["auc"] <= 1


def test_an_llm_over_its_memory_cap_is_offloaded_by_device_map_and_scores_and_trains_the_same(tiny_llm, tmp_path):
    # device_map: auto with llm_max_memory below the LLM's size: accelerate keeps the layers that do not fit on
    # disk (weights on the meta device, brought in for each forward). The LoRA weights of those layers, the
    # input embedding and the answer head must be found where the layers run.
    config, model, (train, valid, _) = build(tiny_llm, **offload_options(tiny_llm, tmp_path / "offload"),
                                              train_rows_per_epoch=32, eval_rows=64)
    placed = model.llm.hf_device_map
    assert "disk" in placed.values() and "cpu" in placed.values(), placed
    _, reference, _ = build(tiny_llm)  # the same LLM, all in memory
    with torch.no_grad():
        for p in model.lora.P.values():
            p.normal_(0, 0.5)
    reference.load_state_dict(model.trainable_state_dict(), strict=False)
    assert_same_scores_and_gradients(model, reference, first_batch(train))
    trainer = get_trainer(config["MODEL_TYPE"], "CoRA", config)(config, model)
    _, result = trainer.fit(train, valid)
    assert result["rows"] == 64 and 0 <= result["auc"] <= 1


def test_the_pipeline_with_an_offloaded_llm_gives_the_results_of_the_llm_in_memory(tiny_llm, tmp_path):
    # run_recbole_cora builds the model and places it: an offloaded layer (meta weights) cannot be moved
    options = {**SMALL_CORA, "llm_path": tiny_llm, "train_rows_per_epoch": 32, "eval_rows": 64}
    offloaded = run_recbole_cora(model="CoRA", dataset="ml-100k",
                                 config_dict={**options, **offload_options(tiny_llm, tmp_path / "offload")})
    in_memory = run_recbole_cora(model="CoRA", dataset="ml-100k", config_dict=options)
    for key in ("auc", "uauc", "logloss"):
        assert offloaded["test_result"][key] == pytest.approx(in_memory["test_result"][key], abs=1e-5), key


def test_gradient_checkpointing_gives_the_same_gradients_and_recomputes_with_the_adaptation(tiny_llm):
    grads = {}
    for checkpointing in (False, True):
        config, model, (train, _, _) = build(tiny_llm, gradient_checkpointing=checkpointing, lora_dropout=0.0, query_dropout=0.0)
        with torch.no_grad():  # P != 0, so that the per-sample delta matters in the recomputed forward
            for P in model.lora.P.values():
                P.normal_(0, 0.05)
        model.train()
        calls = []
        q_proj = model.llm.model.layers[0].self_attn.q_proj  # where the per-sample delta is added
        handle = q_proj.register_forward_hook(lambda *args: calls.append(1))
        model.calculate_loss(first_batch(train)).backward()
        model.release_adaptation()
        handle.remove()
        assert len(calls) == (2 if checkpointing else 1)  # the backward ran the layer's forward again
        assert model.lora._batch is None  # released after backward
        grads[checkpointing] = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    assert grads[False].keys() == grads[True].keys()
    for name in grads[False]:
        assert torch.allclose(grads[False][name], grads[True][name], atol=1e-6, rtol=1e-4), name
    for enabled, forwards in ((False, 1), (True, 2)):  # switched on an existing model (the benchmark does)
        model.set_gradient_checkpointing(enabled)
        calls.clear()
        handle = q_proj.register_forward_hook(lambda *args: calls.append(1))
        model.calculate_loss(first_batch(train)).backward()
        model.release_adaptation()
        handle.remove()
        assert len(calls) == forwards and not model.llm.training


def test_tokenized_prompts_are_cached_on_disk_per_tokenizer_and_template(tiny_llm, caplog):
    config, model, (train, _, _) = build(tiny_llm)
    batch = first_batch(train, 32)
    ids, _ = model.prompts.batch(batch)
    model.save_prompt_caches()
    cache = model.prompts.cache_file
    assert cache.is_file() and cache.parent.name == "token_cache"
    import logging

    with caplog.at_level(logging.INFO):
        _, again, _ = build(tiny_llm)
    assert "token cache: " in caplog.text and len(again.prompts._cache) >= 32
    again.prompts.tokenizer = None  # nothing may be tokenized now: every prompt comes from the file
    assert torch.equal(again.prompts.batch(batch)[0], ids)
    _, other, _ = build(tiny_llm, prompt_history_separator="; ")
    assert other.prompts.cache_file != cache and len(other.prompts._cache) == 0
    cache.write_bytes(b"broken")
    with caplog.at_level(logging.WARNING):
        _, fresh, _ = build(tiny_llm)
    assert "could not be read" in caplog.text and torch.equal(fresh.prompts.batch(batch)[0], ids)


def test_length_bucketing_scores_the_same_and_pads_less(tiny_llm):
    config, model, (train, valid, _) = build(tiny_llm, eval_rows=96)
    trainer = get_trainer(config["MODEL_TYPE"], "CoRA", config)(config, model)
    model.eval()
    structs = {}
    for mode in ("none", "eval"):
        config["length_bucketing"] = mode
        structs[mode] = trainer.score_rows(model, valid)
    for key in ("data.uid", "data.label", "data.warm"):
        assert torch.equal(structs["none"].get(key), structs["eval"].get(key))
    assert torch.allclose(structs["none"].get("rec.score"), structs["eval"].get("rec.score"), atol=1e-5)

    rows = list(range(len(train._dataset)))[:640]
    bucketed = length_bucketed(rows, prompt_lengths(trainer.model, train, rows), 16, config["seed"], 0)
    assert len(bucketed) == 640 and sorted(bucketed) == rows  # a permutation (640 = 40 full batches)
    assert bucketed != length_bucketed(rows, prompt_lengths(trainer.model, train, rows), 16, config["seed"], 1)  # reshuffled each epoch
    lengths = dict(zip(rows, prompt_lengths(trainer.model, train, rows)))

    def padding(order):
        batches = [order[k: k + 16] for k in range(0, len(order), 16)]
        return sum(max(lengths[r] for r in b) * len(b) - sum(lengths[r] for r in b) for b in batches)

    shuffled = torch.randperm(640, generator=torch.Generator().manual_seed(0)).tolist()
    assert padding(bucketed) < 0.5 * padding(shuffled)
