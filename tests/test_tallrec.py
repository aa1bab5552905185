import torch
from recbole.data import data_preparation
from recbole.utils import init_seed

from recbole_cora.config import Config
from recbole_cora.model.llm_recommender.tallrec import TALLRec
from recbole_cora.utils import create_dataset, get_trainer

from conftest import SMALL_CORA
from helpers import assert_same_scores_and_gradients, offload_options


def build(tiny_llm, **extra):
    config = Config("TALLRec", "ml-100k", config_dict={**SMALL_CORA, "llm_path": tiny_llm, **extra})
    init_seed(config["seed"], config["reproducibility"])
    train, valid, test = data_preparation(config, create_dataset(config))
    return config, TALLRec(config, train._dataset), (train, valid, test)


def test_tallrec_trains_only_lora_and_starts_as_the_frozen_llm(tiny_llm):
    # the paper's form: the LLM's own head is read (answer_head: frozen)
    config, model, (train, valid, _) = build(tiny_llm, train_rows_per_epoch=64, eval_rows=64, answer_head="frozen")
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_A" in n or "lora_B" in n for n in trainable)
    assert {n.split(".")[-4] for n in trainable} == {"q_proj", "v_proj"}  # ...q_proj.lora_A.default.weight
    frozen = {n: t.clone() for n, t in model.state_dict().items() if "lora_" not in n}
    trainer = get_trainer(config["MODEL_TYPE"], "TALLRec", config)(config, model)
    trainer.fit(train, valid)
    for name, before in frozen.items():
        assert torch.equal(model.state_dict()[name], before), name
    changed = [n for n, t in model.trainable_state_dict().items() if "lora_B" in n and t.abs().sum() > 0]
    assert changed  # lora_B starts at 0 and has moved
    model.train()
    assert not model.llm.training and any(m.training for n, m in model.llm.named_modules() if n.endswith("lora_dropout"))


def test_peft_lora_on_layers_offloaded_to_disk_is_made_where_they_run(tiny_llm, tmp_path):
    # peft would leave the LoRA weights of an offloaded layer on the meta device: no values, a failing backward
    config, model, (train, _, _) = build(tiny_llm, **offload_options(tiny_llm, tmp_path / "offload"))
    assert "disk" in model.llm.hf_device_map.values()
    _, reference, _ = build(tiny_llm)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    reference.load_state_dict(model.trainable_state_dict(), strict=False)
    batch = train.collate_fn(list(range(16)))
    assert_same_scores_and_gradients(model, reference, batch[0] if isinstance(batch, tuple) else batch)


def test_the_reference_loss_is_the_language_model_loss_over_prompt_answer_and_end_token(tiny_llm):
    # answer_loss: lm (TALLRec's reference code, train_on_inputs): every token of "prompt + answer word + end token"
    # is predicted from the ones before it, over the whole vocabulary, the mean over the batch's tokens
    _, model, (train, _, _) = build(tiny_llm, answer_loss="lm", answer_head="frozen")
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)  # a LoRA that does something, so that the loss must go through it
    model.eval()
    batch = train.collate_fn(list(range(6)))
    batch = batch[0] if isinstance(batch, tuple) else batch
    labels = batch[model.LABEL].tolist()
    assert 0 < sum(labels) < len(labels)  # both answers are in the batch
    yes, no = model.scorer.answer_ids
    total, count = 0.0, 0
    for ids, label in zip(model.prompts.token_ids(*model.prompts.rows(batch)), labels):
        row = torch.tensor([ids + [yes if label > 0.5 else no, model.tokenizer.eos_token_id]])
        logits = model.llm(input_ids=row).logits[0, :-1].double()
        total += torch.nn.functional.cross_entropy(logits, row[0, 1:], reduction="sum").item()
        count += row.shape[1] - 1
    with torch.no_grad():
        loss = model.calculate_loss(batch)
    assert abs(loss.item() - total / count) < 1e-4, (loss.item(), total / count)
    loss = model.calculate_loss(batch)
    loss.backward()
    assert all(p.grad is not None for n, p in model.named_parameters() if p.requires_grad)


def test_the_default_loss_is_bce_of_the_yes_minus_no_score(tiny_llm):
    _, model, (train, _, _) = build(tiny_llm)
    model.eval()
    batch = train.collate_fn(list(range(6)))
    batch = batch[0] if isinstance(batch, tuple) else batch
    with torch.no_grad():
        scores = model.forward(batch)
        loss = model.calculate_loss(batch)
    expected = torch.nn.functional.binary_cross_entropy_with_logits(scores, batch[model.LABEL].float())
    assert torch.allclose(loss, expected)


def test_the_few_shot_sample_is_drawn_once_and_is_every_epoch_s_rows(tiny_llm):
    config, model, (train, _, _) = build(tiny_llm, llm_train_samples=48)
    assert len(model.train_row_subset) == 48
    _, again, _ = build(tiny_llm, llm_train_samples=48)
    assert again.train_row_subset == model.train_row_subset  # drawn with the seed
    trainer = get_trainer(config["MODEL_TYPE"], "TALLRec", config)(config, model)
    assert sorted(trainer.train_rows(train, 0)) == sorted(trainer.train_rows(train, 1)) == model.train_row_subset


def test_the_reference_preset_is_a_valid_run(tiny_llm):
    from recbole_cora.config import PROPERTIES_DIR

    preset = str(PROPERTIES_DIR / "presets" / "tallrec_reference.yaml")
    config = Config("TALLRec", "ml-100k", config_file_list=[preset], config_dict={**SMALL_CORA, "llm_path": tiny_llm})
    assert not config.problems, config.problems
    assert (config["answer_loss"], config["llm_train_samples"], config["gradient_accumulation_steps"]) == ("lm", 512, 8)
    assert config["train_batch_size"] * config["gradient_accumulation_steps"] == 128


def test_the_plan_says_the_few_shot_sample_is_fixed_and_counts_accumulated_steps(tiny_llm):
    from recbole_cora.plan import describe_plan

    config, _, splits = build(tiny_llm, llm_train_samples=48, gradient_accumulation_steps=2, train_rows_per_epoch=None)
    line = next(line for line in describe_plan(config, splits[0]._dataset, splits, TALLRec) if "  train " in line)
    assert "a fixed sample of 48 of the" in line and "drawn anew" not in line, line
    assert "1 steps of 32 (16 x 2 accumulated) rows per epoch" in line, line


def test_the_trainable_answer_head_starts_at_zero_learns_beside_lora_and_is_not_in_the_zero_shot_row(tiny_llm):
    # answer_head: trainable (TALLRec's default, ours): the answer rows of the output head get a zero-initialised
    # update W h + b; before training the scores are the paper's form's, after it the update has moved and is saved
    config, model, (train, valid, _) = build(tiny_llm, train_rows_per_epoch=64, eval_rows=64, learning_rate=1e-2)
    assert config["answer_head"] == "trainable"
    _, paper, _ = build(tiny_llm, answer_head="frozen")
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert {"answer_head.weight", "answer_head.bias"} <= trainable
    assert all("lora_" in n for n in trainable - {"answer_head.weight", "answer_head.bias"})
    assert model.answer_head.weight.shape == (2, model.d_model)
    batch = train.collate_fn(list(range(8)))
    batch = batch[0] if isinstance(batch, tuple) else batch
    paper.load_state_dict({n: t for n, t in model.trainable_state_dict().items() if "lora_" in n}, strict=False)
    model.eval(), paper.eval()
    with torch.no_grad():
        assert torch.equal(model.forward(batch), paper.forward(batch))  # a zero update
    trainer = get_trainer(config["MODEL_TYPE"], "TALLRec", config)(config, model)
    trainer.fit(train, valid)
    saved = model.trainable_state_dict()
    assert saved["answer_head.weight"].abs().sum() > 0 and saved["answer_head.bias"].abs().sum() > 0
    model.eval()
    with torch.no_grad():
        trained = model.forward(batch)
        with model.zero_shot(), paper.zero_shot():
            assert torch.equal(model.forward(batch), paper.forward(batch))  # the frozen LLM alone: no update
        paper.load_state_dict({n: t for n, t in saved.items() if "lora_" in n}, strict=False)
        head = model.answer_head(model_last_hidden(model, batch))
        assert torch.allclose(trained, paper.forward(batch) + head[:, 0] - head[:, 1], atol=1e-5)


def model_last_hidden(model, batch):
    input_ids, attention_mask = model.prompts.batch(batch, "cpu")
    with model.adapted(batch):
        hidden = model.llm.get_decoder()(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    return hidden[torch.arange(len(hidden)), attention_mask.sum(1) - 1]


def test_the_language_model_loss_with_a_trainable_answer_head_is_refused_before_training(tiny_llm):
    import pytest

    from recbole_cora.checks import OptionError, check_run

    config = Config("TALLRec", "ml-100k", config_dict={**SMALL_CORA, "llm_path": tiny_llm, "answer_loss": "lm"},
                    check=False)
    with pytest.raises(OptionError, match="`answer_head: trainable` would never get a gradient"):
        check_run(config, TALLRec)


def test_the_answer_head_reads_the_hidden_state_standardised_on_the_first_training_rows_and_saves_that_with_it(tiny_llm, tmp_path):
    from recbole_cora.checkpoint import load_trainable, save_trainable
    from recbole_cora.llm.scoring import AnswerHeadUpdate

    head = AnswerHeadUpdate(3, calibration_rows=6)
    rows = torch.tensor([[1.0, 10.0, 0.0], [3.0, 10.0, 0.0], [2.0, 12.0, 0.0], [4.0, 8.0, 0.0],
                         [0.0, 10.0, 0.0], [5.0, 9.0, 0.0], [100.0, 100.0, 100.0]])
    head.train()
    for start in (0, 4, 6):  # batches of 4, 2 (calibration full), 1 (ignored)
        head(rows[start: start + 4 if start == 0 else start + (2 if start == 4 else 1)])
    assert int(head.rows_seen) == 6
    assert torch.allclose(head.mean, rows[:6].mean(0)) and torch.allclose(head.variance, rows[:6].var(0, unbiased=False))
    with torch.no_grad():
        head.weight[0, 0] = 1.0
    head.eval()
    z = (rows[0, 0] - rows[:6, 0].mean()) / rows[:6, 0].std(unbiased=False)
    assert torch.allclose(head(rows[:1])[0, 0], z)  # dimension 2 is constant: finite, weight 0
    # with the model: the statistics are learned state, saved and loaded with the trainable weights
    config, model, (train, valid, _) = build(tiny_llm, train_rows_per_epoch=32, eval_rows=32, answer_head_lr=1e-2)
    groups = model.parameter_groups()
    assert [g.get("lr") for g in groups] == [None, 1e-2] and groups[1]["params"] == list(model.answer_head.parameters())
    trainer = get_trainer(config["MODEL_TYPE"], "TALLRec", config)(config, model)
    assert [g["lr"] for g in trainer.optimizer.param_groups][1] > [g["lr"] for g in trainer.optimizer.param_groups][0]
    trainer.fit(train, valid)
    assert int(model.answer_head.rows_seen) == 32 and model.answer_head.variance.min() < 1
    save_trainable(model, tmp_path / "run", config, state={})
    _, again, _ = build(tiny_llm)
    load_trainable(again, tmp_path / "run")
    assert torch.equal(again.answer_head.mean, model.answer_head.mean) and int(again.answer_head.rows_seen) == 32
