"""Laser on the tiny LLM and a slice of ml-100k: its parts against references, a step, learning, two stages."""

import pytest
import torch
import torch.nn.functional as F
from recbole.data import data_preparation
from recbole.utils import init_seed

from recbole_cora import run_recbole_cora
from recbole_cora.config import Config
from recbole_cora.model.layers import MFormer, load_balance_loss
from recbole_cora.model.llm_recommender.laser import Laser
from recbole_cora.stages import prepare_stages
from recbole_cora.training import LLMTrainer
from recbole_cora.utils import create_dataset, get_trainer

from conftest import QUIET
from helpers import SLICE_OPTIONS, ml100k_slice

SMALL_LASER = {
    **QUIET, **SLICE_OPTIONS, "mformer_layers": 2, "mformer_width": 32, "mformer_heads": 2, "num_queries": 4,
    "num_experts": 4, "user_vector_size": 32, "train_batch_size": 16, "eval_batch_size": 64, "history_len": 5,
    "sequential_encoder_config": {"epochs": 3, "hidden_size": 16, "n_layers": 1, "n_heads": 1, "inner_size": 32,
                                  "train_batch_size": 256},
}
# the paper's stage 1: the cached matrix alone, the raw cosine
PAPER = {"item_gradient": "none", "center_vectors": False}


@pytest.fixture(scope="module")
def slice_path(tmp_path_factory):
    return ml100k_slice(tmp_path_factory.mktemp("slice"))


@pytest.fixture(scope="module")
def stage_root(tmp_path_factory):
    return str(tmp_path_factory.mktemp("stages"))  # BERT4Rec is trained once for the module, then found


def build(tiny_llm, slice_path, stage_root, **extra):
    options = {**SMALL_LASER, "llm_path": tiny_llm, "data_path": slice_path, "cf_checkpoint_dir": stage_root, **extra}
    config = Config("Laser", "ml100k-slice", config_dict=options)
    init_seed(config["seed"], config["reproducibility"])
    dataset = create_dataset(config)
    train, valid, test = data_preparation(config, dataset)
    prepare_stages(config, dataset, Laser)
    torch.manual_seed(0)
    return config, Laser(config, train._dataset), (train, valid, test)


def first_batch(data, n=16):
    batch = data.collate_fn(list(range(n)))
    return batch[0] if isinstance(batch, tuple) else batch


def test_the_router_and_the_load_balancing_term_match_a_plain_reference():
    torch.manual_seed(0)
    mformer = MFormer(input_size=8, d_model=12, num_experts=4, num_queries=3, width=16, layers=3, heads=2).eval()
    history = torch.randn(5, 6, 8)
    mask = torch.tensor([[1, 1, 1, 0, 0, 0], [1, 0, 0, 0, 0, 0], [1, 1, 1, 1, 1, 1], [1, 1, 0, 0, 0, 0], [0] * 6]).bool()
    item_probs, user_probs = mformer.route(history, mask)
    for b in range(5):  # the user's distribution: the mean over its real items of each item's softmax
        real = [torch.softmax(mformer.router(history[b, j]), dim=-1) for j in range(6) if mask[b, j]]
        if real:
            assert torch.allclose(user_probs[b], torch.stack(real).mean(0), atol=1e-6)
    prefix, (probs, routed) = mformer(history, mask)
    assert prefix.shape == (5, 3, 12) and routed[4, 0] and not routed[4, 1:].any()  # an empty row sees its padding
    # K sum_j f_j P_j, item by item
    items = [probs[b, j] for b in range(5) for j in range(6) if routed[b, j]]
    K = 4
    f = [sum(int(p.argmax()) == k for p in items) / len(items) for k in range(K)]
    P = [sum(p[k] for p in items) / len(items) for k in range(K)]
    assert torch.allclose(load_balance_loss(probs, routed), K * sum(fk * Pk for fk, Pk in zip(f, P)), atol=1e-6)
    uniform = torch.full((2, 3, K), 1 / K)
    assert torch.allclose(load_balance_loss(uniform, torch.ones(2, 3, dtype=torch.bool)), torch.tensor(1.0))
    # the top-1 expert's queries: changing another expert's queries changes nothing
    expert = user_probs[0].argmax()
    with torch.no_grad():
        before = mformer(history[:1], mask[:1])[0]
        mformer.queries[(expert + 1) % K] += 1.0
        assert torch.equal(mformer(history[:1], mask[:1])[0], before)


def test_the_loss_is_recbole_s_cross_entropy_over_the_cosine_logits_plus_the_balance_term(tiny_llm, slice_path, stage_root):
    config, model, (train, _, _) = build(tiny_llm, slice_path, stage_root, **PAPER)
    model.set_item_matrix(torch.randn(model.n_items, model.vector_size))
    model.eval()
    batch = first_batch(train)
    users, balance = model.user_vectors(batch)
    logits = F.normalize(users, dim=-1) @ F.normalize(model.item_matrix, dim=-1).t() / 0.05
    logits[:, 0] = -float("inf")
    expected = torch.nn.CrossEntropyLoss()(logits, batch["item_id"]) + balance  # RecBole's CE (SASRec's loss_type CE)
    assert torch.allclose(model.calculate_loss(batch), expected, atol=1e-5)
    assert balance > 0 and torch.allclose(balance, 0.01 * load_balance_loss(*_routing(model, batch)), atol=1e-6)


def _routing(model, batch):
    history = batch["item_id_list"]
    items = model.sequence_encoder.item_embeddings(history)
    return model.mformer(items, history > 0)[1]


def test_laser_trains_on_the_next_items_as_they_are(tiny_llm, slice_path, stage_root):
    # RecBole's default for models without `loss_type: CE` adds a sampled "negative" item per row as a second
    # target, drawn anew at every load (found when a resumed run diverged from the uninterrupted one)
    config, model, (train, _, _) = build(tiny_llm, slice_path, stage_root)
    rows = [3, 40, 41, 500]
    first, again = train.collate_fn(rows), train.collate_fn(rows)
    assert len(first) == 4 and "label" not in first
    assert torch.equal(first["item_id"], again["item_id"])
    assert torch.equal(first["item_id"], train._dataset.inter_feat["item_id"][torch.tensor(rows)])


def test_a_row_s_vector_does_not_depend_on_the_other_rows_of_its_batch(tiny_llm, slice_path, stage_root):
    config, model, (train, _, _) = build(tiny_llm, slice_path, stage_root)
    model.eval()
    batch = first_batch(train, 12)
    lengths = model.prompt_lengths(batch)
    assert len(set(lengths)) > 1  # rows of different lengths: the suffix follows each row's own last token
    together = model.user_vectors(batch)[0]
    for k in range(12):
        alone = model.user_vectors(batch[torch.tensor([k])])[0]
        assert torch.allclose(alone[0], together[k], atol=1e-4), k
    items = model.item_vectors(torch.tensor([3, 7]))
    assert torch.allclose(items[1], model.item_vectors(torch.tensor([7]))[0], atol=1e-4)


def test_a_step_leaves_the_llm_and_the_sequential_encoder_unchanged_and_reaches_every_trainable_part(
        tiny_llm, slice_path, stage_root):
    config, model, (train, _, _) = build(tiny_llm, slice_path, stage_root)
    model.set_item_matrix(torch.randn(model.n_items, model.vector_size))
    frozen = {n: t.clone() for n, t in model.state_dict().items() if n.startswith(("llm.", "sequence_encoder."))}
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith(("mformer.", "suffix", "projection.")) for n in trainable)
    optimizer = torch.optim.Adam(trainable.values(), lr=1e-2)
    model.train()
    assert not model.llm.training and not model.sequence_encoder.training
    optimizer.zero_grad()
    model.calculate_loss(first_batch(train)).backward()
    missing = [n for n, p in trainable.items() if p.grad is None or not p.grad.abs().sum() > 0]
    # every expert's queries but the chosen ones get no gradient in a batch that chose few experts: the router,
    # blocks, projections, suffix and the chosen experts' queries do
    assert missing == [] or missing == ["mformer.queries"], missing
    assert trainable["mformer.queries"].grad.abs().sum() > 0 and trainable["mformer.router.weight"].grad.abs().sum() > 0
    optimizer.step()
    for name, before in frozen.items():
        assert torch.equal(model.state_dict()[name], before), name
    saved = model.trainable_state_dict()
    assert "item_matrix" in saved and not any(n.startswith(("llm.", "sequence_encoder.")) for n in saved)


def test_laser_learns_on_an_ml100k_slice_and_stage_two_keeps_the_best_item_matrix(tiny_llm, slice_path, stage_root):
    # (on this slice RecBole's Pop reaches valid NDCG@10 0.011; Laser here 0.014-0.026 over four seeds)
    options = {"stage1_epochs": 5, "stage2_epochs": 1, "train_rows_per_epoch": 512, "learning_rate": 1e-3,
               "warmup_ratio": 0.0}
    config, model, (train, valid, test) = build(tiny_llm, slice_path, stage_root, **options)
    trainer = get_trainer(config["MODEL_TYPE"], "Laser", config)(config, model)
    assert isinstance(trainer, LLMTrainer) and model.training_stages() == [1, 2]
    trainer.compute_item_matrix()
    probe = first_batch(train, 128)
    with torch.no_grad():
        model.eval()
        before = model.calculate_loss(probe).item()
    _, valid_result = trainer.fit(train, valid)
    with torch.no_grad():
        model.eval()
        after = model.calculate_loss(probe).item()
    assert after < before - 0.05, (before, after)
    random_ndcg = 0.0025  # one relevant item of 1,682: NDCG@10 of a random ranking is about 10/1682 * 0.4
    # (since valid ranks against the matrix of the weights being validated, this seed's valid has 2 hits of 120
    # users: a count this small is noise, the loss drop above is the guard; a planted-signal test is still to come)
    assert valid_result["ndcg@10"] > 4 * random_ndcg and valid_result["hit@10"] * 120 >= 2, valid_result
    # stage 2 starts from stage 1's best model and never recomputes its item matrix
    trainer.load_best_model()
    matrix = model.item_matrix.clone()
    model.set_stage(2)
    trainer = get_trainer(config["MODEL_TYPE"], "Laser", config)(config, model)
    trainer.fit(train, valid)
    assert torch.equal(model.item_matrix, matrix)


def test_run_recbole_cora_reports_laser_beside_its_frozen_sequential_encoder(tiny_llm, slice_path, stage_root, caplog):
    import logging

    options = {**SMALL_LASER, "llm_path": tiny_llm, "data_path": slice_path, "cf_checkpoint_dir": stage_root,
               "stage1_epochs": 1, "stage2_epochs": 1, "train_rows_per_epoch": 64, "eval_rows": 50, "state": "INFO"}
    with caplog.at_level(logging.INFO):
        out = run_recbole_cora("Laser", "ml100k-slice", config_dict=options)
    # stage 1's time estimate counts the item-matrix pass its epoch needs (every item through the LLM again); stage
    # 2 keeps its matrix fixed, so its estimate is the steps alone
    estimates = [r.getMessage() for r in caplog.records if " s a training step (measured over" in r.getMessage()]
    assert len(estimates) == 2 and "1 item-matrix pass(es) of" in estimates[0] and "item-matrix" not in estimates[1]
    # encoder_residual (the default): the fused score, the LLM's cosine alone (the paper's) and the encoder's own
    assert set(out["results"]) == {"Laser", "Laser (LLM score alone)", "BERT4Rec (frozen sequential encoder)"}
    for row in out["results"].values():
        assert row["users"] == 50 and 0 <= row["ndcg@10"] <= row["ndcg@20"] <= 1
    assert "| Laser | users | 50 |" in out["table"]


def test_a_sequential_encoder_stage_made_for_another_split_is_refused(tiny_llm, slice_path, stage_root, tmp_path):
    from recbole_cora.model.encoders import CFCheckpointError, FrozenSequentialRecommender

    config, model, _ = build(tiny_llm, slice_path, stage_root)
    other = Config("Laser", "ml100k-slice", config_dict={**SMALL_LASER, "llm_path": tiny_llm,
                                                          "data_path": ml100k_slice(tmp_path, max_user=100)})
    dataset = create_dataset(other)
    train, _, _ = data_preparation(other, dataset)
    with pytest.raises(CFCheckpointError, match="was trained on another split .*Delete it to retrain"):
        FrozenSequentialRecommender.from_stage(config["sequence_stage_dir"], train._dataset)


def test_a_saved_stage_one_model_holds_the_item_matrix_of_its_own_weights(tiny_llm, slice_path, stage_root):
    # with one stage-1 epoch the matrix used to be computed once, before the first step, and saved with the trained
    # weights: stage 2 and test then ranked against vectors of weights no one had trained (benchmarks/QUALITY.md §6)
    options = {"stage1_epochs": 1, "stage2_epochs": 0, "train_rows_per_epoch": 64, "learning_rate": 1e-2,
               "warmup_ratio": 0.0}
    config, model, (train, valid, _) = build(tiny_llm, slice_path, stage_root, **options)
    trainer = get_trainer(config["MODEL_TYPE"], "Laser", config)(config, model)
    trainer.fit(train, valid)
    trainer.load_best_model()
    saved = model.item_matrix.clone()
    assert model.has_item_matrix
    trainer.compute_item_matrix()
    assert torch.allclose(model.item_matrix, saved, atol=1e-5), (model.item_matrix - saved).abs().max()


def test_item_gradient_scores_the_batch_targets_with_fresh_vectors_and_writes_them_back(tiny_llm, slice_path, stage_root):
    config, model, (train, _, _) = build(tiny_llm, slice_path, stage_root, item_gradient="batch", center_vectors=True)
    model.set_item_matrix(torch.randn(model.n_items, model.vector_size))
    cached = model.item_matrix.clone()
    center = model.item_matrix[1:].mean(dim=0)
    assert torch.allclose(model.item_center, center)
    batch = first_batch(train)
    model.train()
    torch.manual_seed(5)
    loss = model.calculate_loss(batch)
    targets = torch.unique(batch["item_id"])
    # the fresh rows were written back to the cache: recompute the logits from it, by hand, with the same dropout
    torch.manual_seed(5)
    users, balance = model.user_vectors(batch)
    unit = lambda v: F.normalize(v - center, dim=-1)
    logits = unit(users) @ unit(model.item_matrix).t() / 0.05
    logits[:, 0] = -float("inf")
    assert torch.allclose(loss, F.cross_entropy(logits, batch["item_id"]) + balance, atol=1e-4)
    others = torch.ones(model.n_items, dtype=torch.bool)
    others[targets] = False
    assert torch.equal(model.item_matrix[others], cached[others])  # every other item keeps its cached row
    assert not torch.isclose(model.item_matrix[targets], cached[targets]).all(dim=1).any()
    model.weights_changed()
    assert not model.has_item_matrix
    model.freeze_item_matrix()  # stage 2: the matrix stays current and no item is encoded with gradient
    model.set_item_matrix(model.item_matrix)
    model.weights_changed()
    assert model.has_item_matrix


def test_with_the_encoder_residual_validation_reads_the_llm_s_score_and_test_the_fused_one(tiny_llm, slice_path,
                                                                                           stage_root):
    # the gate is fitted after training: until then the fused score is the encoder's, the same at every epoch, so
    # validation (early stopping, the best model) must read the LLM's own score
    config, model, (train, valid, _) = build(tiny_llm, slice_path, stage_root, encoder_residual=True, eval_rows=40)
    trainer = get_trainer(config["MODEL_TYPE"], "Laser", config)(config, model)
    model.eval()
    trainer.compute_item_matrix()
    encoder = trainer.evaluate_model(model.reference_encoder(), valid)
    assert trainer.evaluate_model(model, valid) == encoder  # gate 0: the encoder's ranking
    _, validated = trainer._valid_epoch(valid)
    with model.llm_score_alone():
        alone = trainer.evaluate_model(model, valid)
    assert model.residual is not None and validated == alone and alone != encoder
    gate, before, after = trainer.fit_residual_gate(valid)
    assert float(model.residual.gate) == pytest.approx(gate) and after <= before


def test_the_plan_counts_the_item_matrix_passes():
    # a new user's 3,706-item run was estimated at 56 s an epoch and took 286 s: the rest was the item matrix
    from recbole_cora.plan import describe_plan
    from recbole_cora.utils import get_model

    config = Config("Laser", "ml-100k", config_dict={**QUIET, "stage1_epochs": 3, "stage2_epochs": 1,
                                                      "train_rows_per_epoch": 64, "train_batch_size": 16})
    dataset = create_dataset(config)
    splits = data_preparation(config, dataset)
    lines = describe_plan(config, dataset, splits, get_model("Laser"))
    items = next(line for line in lines if line.strip().startswith("items"))
    assert "all 1,682 items through the LLM 4 times (before stage 1 and after each of its 3 epoch(s))" in items, items
    config["item_refresh_steps"] = 2
    lines = describe_plan(config, dataset, splits, get_model("Laser"))
    items = next(line for line in lines if line.strip().startswith("items"))
    assert "7 times" in items and "every 2 steps" in items, items  # 4 steps an epoch: one refresh inside each


def test_an_m_former_width_its_heads_do_not_divide_is_refused_before_anything_runs():
    from recbole_cora.checks import OptionError, check_run

    config = Config("Laser", "ml-100k", config_dict={**QUIET, "mformer_width": 64, "mformer_heads": 12}, check=False)
    with pytest.raises(OptionError, match="mformer_width 64 is not a multiple of mformer_heads 12.*mformer_heads: 8"):
        check_run(config, Laser)


def test_hidden_norm_standardises_the_suffix_state_by_the_items_before_the_first_step_and_is_saved(
        tiny_llm, slice_path, stage_root):
    config, model, (train, valid, _) = build(tiny_llm, slice_path, stage_root, hidden_norm="standardize")
    norm = model.hidden_norm
    assert norm.calibration_rows == model.n_items - 1 and not norm.calibrated  # the slice has fewer than 2,048 items
    trainer = get_trainer(config["MODEL_TYPE"], "Laser", config)(config, model)
    trainer.compute_item_matrix()  # the first pass calibrates, with the untrained weights
    assert norm.calibrated and int(norm.rows_seen) == model.n_items - 1
    model.eval()
    with torch.no_grad():
        ids = torch.arange(1, model.n_items)
        rows = model.prompts.token_ids([[int(i)] for i in ids], [0] * len(ids))
        states = model.suffix_states(ids.view(-1, 1), rows)[0].float()
        z = norm.standardise(states)
    assert torch.allclose(norm.mean, states.mean(0), atol=1e-4)
    assert z.mean(0).abs().max() < 1e-3 and torch.allclose(z.var(0, unbiased=False), torch.ones(z.shape[1]), atol=1e-2)
    assert torch.allclose(model.item_matrix[1:], model.projection(z), atol=1e-4)  # the matrix read the standardised state
    saved = model.trainable_state_dict()
    assert {"hidden_norm.mean", "hidden_norm.variance", "hidden_norm.rows_seen"} <= set(saved)
    _, again, _ = build(tiny_llm, slice_path, stage_root, hidden_norm="standardize")
    again.load_state_dict(saved, strict=False)
    assert again.hidden_norm.calibrated and torch.equal(again.hidden_norm.mean, norm.mean)
    again.eval()
    with torch.no_grad():  # a loaded model never calibrates again: its vectors are the saved model's
        assert torch.allclose(again.item_vectors(ids[:8]), model.item_vectors(ids[:8]), atol=1e-5)
    _, paper, _ = build(tiny_llm, slice_path, stage_root)
    assert paper.hidden_norm is None and not any(k.startswith("hidden_norm") for k in paper.trainable_state_dict())


def test_vector_layer_projects_the_suffix_state_of_that_decoder_layer(tiny_llm, slice_path, stage_root):
    config, model, (train, _, _) = build(tiny_llm, slice_path, stage_root, vector_layer=1)
    model.eval()
    ids = torch.arange(1, 6)
    rows = model.prompts.token_ids([[int(i)] for i in ids], [0] * len(ids))
    caught = []
    hook = model.llm.get_decoder().layers[0].register_forward_hook(
        lambda module, args, out: caught.append(out[0] if isinstance(out, tuple) else out))
    with torch.no_grad():
        states = model.suffix_states(ids.view(-1, 1), rows)[0]
    hook.remove()
    history = ids.view(-1, 1)
    suffix_at = model.mformer.queries.shape[1] + torch.tensor([len(r) for r in rows])  # after the prefix and the prompt
    assert torch.allclose(states, caught[0][torch.arange(len(ids)), suffix_at], atol=1e-5)
    _, last, _ = build(tiny_llm, slice_path, stage_root)
    last.eval()
    with torch.no_grad():
        assert not torch.allclose(states, last.suffix_states(history, rows)[0], atol=1e-3)
    with pytest.raises(ValueError, match="vector_layer 3: the LLM has 2 decoder layers; use 1 to 2"):
        build(tiny_llm, slice_path, stage_root, vector_layer=3)


def test_item_projection_separate_caches_item_states_and_trains_the_item_map_on_every_item_in_stage_one(
        tiny_llm, slice_path, stage_root):
    # ours: in stage 1 the shared projection trained on the user side only and every item then went through it,
    # which collapsed the items onto one direction (QUALITY.md section 8); the item side gets its own map here, over
    # the suffix states the matrix caches, applied with gradient in every step
    config, model, (train, valid, _) = build(tiny_llm, slice_path, stage_root, item_projection="separate")
    assert model.item_matrix.shape == (model.n_items, model.d_model)
    trainer = get_trainer(config["MODEL_TYPE"], "Laser", config)(config, model)
    trainer.compute_item_matrix()
    model.eval()
    ids = torch.tensor([3, 7, 11])
    with torch.no_grad():
        rows = model.prompts.token_ids([[int(i)] for i in ids], [0] * len(ids))
        states = model.suffix_states(ids.view(-1, 1), rows)[0].float()
    assert torch.allclose(model.item_matrix[ids], states, atol=1e-4)  # the cache holds states, not vectors
    batch = first_batch(train)
    users, balance = model.user_vectors(batch)
    items = model.item_projection(model.item_matrix)
    logits = F.normalize(users, dim=-1) @ F.normalize(items, dim=-1).t() / 0.05
    logits[:, 0] = -float("inf")
    loss = model.calculate_loss(batch)
    assert torch.allclose(loss, F.cross_entropy(logits, batch["item_id"]) + balance, atol=1e-5)
    assert not torch.allclose(model.item_projection.weight, model.projection.weight)  # two maps
    model.train()
    model.calculate_loss(batch).backward()
    grad = model.item_projection.weight.grad
    assert grad is not None and grad.abs().sum() > 0 and model.projection.weight.grad.abs().sum() > 0
    saved = model.trainable_state_dict()
    assert {"item_projection.weight", "item_projection.bias", "item_matrix"} <= set(saved)
    model.set_stage(2)  # stage 2 keeps the item side as stage 1 left it
    assert not model.item_projection.weight.requires_grad and "item_projection.weight" not in model.trainable_state_dict()
    _, shared, _ = build(tiny_llm, slice_path, stage_root)
    assert shared.item_projection is None and shared.item_matrix.shape == (shared.n_items, shared.vector_size)


def test_item_projection_separate_with_centred_vectors_is_refused_before_anything_runs():
    from recbole_cora.checks import OptionError, check_run

    config = Config("Laser", "ml-100k", config_dict={**QUIET, "item_projection": "separate", "center_vectors": True},
                    check=False)
    with pytest.raises(OptionError, match="center_vectors does nothing useful with item_projection: separate"):
        check_run(config, Laser)
