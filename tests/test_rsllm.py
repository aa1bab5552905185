"""RSLLM on the tiny LLM and a slice of ml-100k: the text-ID prompt, the cached candidate likelihood, greedy answers,
each loss term against a plain reference, the stages' gradients, and a run of the pipeline."""

import pytest
import torch
import torch.nn.functional as F
from recbole.data import data_preparation
from recbole.utils import init_seed

from recbole_cora import run_recbole_cora
from recbole_cora.config import Config
from recbole_cora.data.candidates import candidate_lists
from recbole_cora.model.llm_recommender.rsllm import RSLLM
from recbole_cora.stages import prepare_stages
from recbole_cora.utils import create_dataset

from conftest import QUIET
from helpers import SLICE_OPTIONS, ml100k_slice

SMALL_RSLLM = {
    **QUIET, **SLICE_OPTIONS, "history_len": 4, "candidate_count": 6, "train_batch_size": 4, "eval_batch_size": 4,
    "max_answer_tokens": 44, "lora_target_modules": ["q_proj", "v_proj"],
    "sequential_encoder_config": {"epochs": 2, "hidden_size": 16, "n_layers": 1, "n_heads": 1, "inner_size": 32,
                                  "train_batch_size": 256},
}


@pytest.fixture(scope="module")
def slice_path(tmp_path_factory):
    return ml100k_slice(tmp_path_factory.mktemp("slice"))


@pytest.fixture(scope="module")
def stage_root(tmp_path_factory):
    return str(tmp_path_factory.mktemp("stages"))  # SASRec is trained once for the module, then found


def build(tiny_llm, slice_path, stage_root, **extra):
    options = {**SMALL_RSLLM, "llm_path": tiny_llm, "data_path": slice_path, "cf_checkpoint_dir": stage_root, **extra}
    config = Config("RSLLM", "ml100k-slice", config_dict=options)
    init_seed(config["seed"], config["reproducibility"])
    dataset = create_dataset(config)
    splits = data_preparation(config, dataset)
    prepare_stages(config, dataset, RSLLM)
    torch.manual_seed(0)
    model = RSLLM(config, splits[0]._dataset)
    with torch.no_grad():  # LoRA's B starts at zero: make the adapted LLM differ from the frozen one
        for name, p in model.llm.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    return config, model, splits


def first_batch(data, rows):
    batch = data.collate_fn(list(rows))
    return batch[0] if isinstance(batch, tuple) else batch


def full_logprob(model, prompt, answer, history):
    """log p(answer | prompt) from one full forward of prompt + answer alone (no cache, no padding)."""
    embeds, mask, _, _ = model.embed([prompt], [answer], history)
    logits = model.llm(inputs_embeds=embeds, attention_mask=mask, use_cache=False).logits[0].float()
    start = len(prompt.ids) - 1
    logp = torch.log_softmax(logits[start: start + len(answer)], dim=-1)
    return logp.gather(1, torch.tensor(answer).view(-1, 1)).sum()


@pytest.mark.parametrize("stage", [1, 2])
def test_the_cached_likelihood_of_each_candidate_equals_a_full_forward_of_each(tiny_llm, slice_path, stage_root, stage):
    config, model, (_, _, test) = build(tiny_llm, slice_path, stage_root, candidate_score="sum")
    model.set_stage(stage)
    model.eval()
    rows = [0, 5, 9]
    batch = first_batch(test, rows)
    lists = candidate_lists(config, test._dataset)[torch.tensor(rows)]
    cached = model.candidate_scores(batch, lists)
    prompts = model.build_prompts(batch["item_id_list"], lists)
    assert len({len(p.ids) for p in prompts}) > 1  # prompts of different lengths share the batch (padding)
    with torch.no_grad():
        for r, prompt in enumerate(prompts):
            for c, item in enumerate(lists[r].tolist()):
                reference = full_logprob(model, prompt, model.prompts.answer_ids(item), batch["item_id_list"][r:r + 1])
                assert torch.allclose(cached[r, c], reference, atol=1e-4), (r, c, float(cached[r, c]), float(reference))
    mean = build(tiny_llm, slice_path, stage_root, candidate_score="mean")[1]  # the mean divides by each answer's token count
    mean.set_stage(stage)
    mean.eval()
    counts = torch.tensor([[len(model.prompts.answer_ids(i)) for i in row] for row in lists.tolist()])
    assert torch.allclose(mean.candidate_scores(batch, lists), cached / counts, atol=1e-4)


def layer_output(model, layer, embeds, mask):
    """The output of decoder layer ``layer`` (1-based) of one pass, caught by a hook on that layer."""
    caught = []
    layers = model.llm.get_decoder().layers
    hook = layers[layer - 1].register_forward_hook(lambda module, args, out: caught.append(
        out[0] if isinstance(out, tuple) else out))
    try:
        model.llm.get_decoder()(inputs_embeds=embeds, attention_mask=mask)
    finally:
        hook.remove()
    return caught[0][0]


@pytest.mark.parametrize("stage,user_token,residual,state,layer", [
    (1, False, False, "mean", None), (2, False, False, "mean", None), (2, True, False, "mean", None),
    (2, True, True, "mean", None), (1, False, False, "last", None), (2, True, False, "last", None),
    (2, True, False, "last", 1)])
def test_the_user_item_score_is_the_cosine_the_user_item_term_trains(tiny_llm, slice_path, stage_root, stage,
                                                                      user_token, residual, state, layer):
    config, model, (_, _, test) = build(tiny_llm, slice_path, stage_root, candidate_score="user_item",
                                        user_token=user_token, encoder_residual=residual, candidate_state=state,
                                        user_item_head_size=None,  # the head's own test maps the states first
                                        user_item_layer=layer)
    model.set_stage(stage)
    model.eval()
    rows = [0, 5, 9]
    batch = first_batch(test, rows)
    lists = candidate_lists(config, test._dataset)[torch.tensor(rows)]
    encoder = torch.zeros(lists.shape)
    gate = 1.0
    if residual:  # SASRec's own score of each candidate + g x the logit
        gate = 0.7
        model.residual.gate.fill_(gate)
        with torch.no_grad():
            encoder = model.sequence_encoder.full_sort_predict(batch).gather(1, lists)
    scores = model.candidate_scores(batch, lists)  # one padded batch
    with torch.no_grad():
        for r, prompt in enumerate(model.build_prompts(batch["item_id_list"], lists)):
            assert (prompt.user_at is not None) == (stage == 2 and user_token)
            # the prompt alone: no padding
            embeds, mask, _, _ = model.embed([prompt], history=batch["item_id_list"][r:r + 1])
            hidden = model.llm.get_decoder()(inputs_embeds=embeds, attention_mask=mask).last_hidden_state[0]
            if layer is not None:  # user_item_layer: that decoder layer's output, not the last (normed) state
                hidden = layer_output(model, layer, embeds, mask)
                assert not torch.allclose(hidden, model.llm.get_decoder()(inputs_embeds=embeds).last_hidden_state[0])
            for c, (start, end) in enumerate(prompt.spans):
                end += stage == 2  # a candidate's ID token follows its title and belongs to it
                if state == "last":  # its ID token alone (stage 2), or its title's last token (stage 1)
                    if stage == 2:  # the position of the candidate's own ID token
                        assert (end - 1, int(lists[r, c])) in prompt.items
                    else:
                        assert end - 1 == start + len(model.prompts.title_ids(int(lists[r, c]))) - 1
                    start = end - 1
                expected = F.cosine_similarity(hidden[len(prompt.ids) - 1], hidden[start:end].mean(0), dim=0)
                expected = encoder[r, c] + gate * expected / model.temperatures["user_item"]
                assert torch.allclose(scores[r, c], expected, atol=1e-4), (r, c)


def test_a_greedy_answer_is_the_argmax_of_full_forwards(tiny_llm, slice_path, stage_root):
    from recbole_cora.llm.scoring import greedy_answers

    config, model, (_, _, test) = build(tiny_llm, slice_path, stage_root)
    model.set_stage(2)
    model.eval()
    batch = first_batch(test, [1, 2])
    lists = candidate_lists(config, test._dataset)[torch.tensor([1, 2])]
    prompts = model.build_prompts(batch["item_id_list"], lists)
    with torch.no_grad():
        embeds, mask, _, _ = model.embed(prompts, history=batch["item_id_list"])
        cached = greedy_answers(model.llm, embeds, mask, 6, model.prompts.eos_id)
        for r, prompt in enumerate(prompts):
            tokens = []
            for _ in range(6):
                e, m, _, _ = model.embed([prompt], [tokens], batch["item_id_list"][r:r + 1])
                token = int(model.llm(inputs_embeds=e, attention_mask=m, use_cache=False).logits[0, -1].argmax())
                if token == model.prompts.eos_id:
                    break
                tokens.append(token)
            assert cached[r] == tokens
    choices = model.answer_candidates(batch, lists)
    assert all(-1 <= c < lists.shape[1] for c in choices)


def test_projected_ids_land_at_their_placeholders_and_nowhere_else(tiny_llm, slice_path, stage_root):
    # the items' ID tokens (the user's is test_the_user_token_ends_a_stage_two_prompt_...)
    config, model, (train, _, _) = build(tiny_llm, slice_path, stage_root, user_token=False)
    model.set_stage(2)
    batch = first_batch(train, range(30, 34))
    lists = model.training_lists(batch["item_id_list"], batch["item_id"])
    prompts = model.build_prompts(batch["item_id_list"], lists)
    embeds, mask, projected, items = model.embed(prompts)
    plain = model.llm.get_input_embeddings()(model.embed(prompts)[1].new_tensor(
        [p.ids + [model.prompts.pad_id] * (mask.shape[1] - len(p.ids)) for p in prompts]))
    changed = (embeds != plain).any(dim=-1)
    expected = torch.zeros_like(changed)
    for r, prompt in enumerate(prompts):
        shown = [i for i in batch["item_id_list"][r].tolist() if i > 0][-4:]
        assert [item for _, item in prompt.items] == shown + lists[r].tolist()  # history, then the list, in order
        for position, item in prompt.items:
            expected[r, position] = True
            assert prompt.ids[position] == model.prompts.placeholder_id
            vector = model.projector(model.sequence_encoder.item_embeddings(torch.tensor([item])))
            assert torch.allclose(embeds[r, position], vector[0], atol=1e-6)
    assert torch.equal(changed, expected)
    assert len(items) == sum(len(p.items) for p in prompts) and projected.shape == (len(items), model.d_model)
    model.set_stage(1)  # the text-only prompt has no placeholder: nothing is replaced
    text = model.build_prompts(batch["item_id_list"], lists)
    assert all(not p.items for p in text) and model.embed(text)[2] is None
    assert all(model.prompts.placeholder_id not in p.ids for p in text)


def test_the_user_token_ends_a_stage_two_prompt_with_the_projected_state_sasrec_ranks_by(tiny_llm, slice_path,
                                                                                          stage_root):
    config, model, (_, _, test) = build(tiny_llm, slice_path, stage_root, user_token=True)
    model.eval()
    batch = first_batch(test, range(4))
    history = batch["item_id_list"]
    states = model.sequence_encoder.user_states(history)
    # the state is the vector SASRec's own ranking scores every item against
    assert torch.allclose(states @ model.sequence_encoder.item_embeddings(torch.arange(model.n_items)).T,
                          model.sequence_encoder.full_sort_predict(batch), atol=1e-5)
    lists = candidate_lists(config, test._dataset)[torch.arange(4)]
    model.set_stage(2)
    prompts = model.build_prompts(history, lists)
    embeds, mask, _, _ = model.embed(prompts, history=history)
    with pytest.raises(ValueError, match="history"):
        model.embed(prompts)  # the user's state cannot be made up
    for r, prompt in enumerate(prompts):
        assert prompt.user_at == len(prompt.ids) - 1 and prompt.ids[-1] == model.prompts.placeholder_id
        assert torch.allclose(embeds[r, prompt.user_at], model.projector(states[r:r + 1])[0], atol=1e-6)
    assert model.example_prompt(batch, lists)[0].endswith(model.prompts.placeholder)
    model.set_stage(1)  # stage 1 has no projector: no user token either
    assert all(p.user_at is None for p in model.build_prompts(history, lists))


@pytest.mark.parametrize("user_token", [False, True])
@pytest.mark.parametrize("state, head, layer", [("mean", None, None), ("last", 8, None), ("last", 8, 1)])
def test_each_loss_term_matches_a_plain_reference(tiny_llm, slice_path, stage_root, monkeypatch, user_token, state,
                                                  head, layer):
    config, model, (train, _, _) = build(tiny_llm, slice_path, stage_root, user_token=user_token,
                                         candidate_state=state, user_item_head_size=head, user_item_layer=layer)
    model.set_stage(2)
    model.eval()
    batch = first_batch(train, range(50, 54))
    torch.manual_seed(3)
    lists = model.training_lists(batch["item_id_list"], batch["item_id"])
    monkeypatch.setattr(model, "training_lists", lambda history, target: lists)
    terms = model.loss_terms(batch)
    prompts = model.build_prompts(batch["item_id_list"], lists)
    lm_losses, ui, idt_q, idt_items = [], [], [], []
    for r, prompt in enumerate(prompts):
        answer = model.prompts.answer_ids(int(batch["item_id"][r]))
        embeds, mask, projected, items = model.embed([prompt], [answer], batch["item_id_list"][r:r + 1])
        out = model.llm(inputs_embeds=embeds, attention_mask=mask, use_cache=False, output_hidden_states=True)
        start = len(prompt.ids) - 1
        logp = torch.log_softmax(out.logits[0, start: start + len(answer)].float(), dim=-1)
        lm_losses += [-logp[j, t] for j, t in enumerate(answer)]
        hidden = out.hidden_states[-1][0] if layer is None else layer_output(model, layer, embeds, mask)
        user = hidden[start]
        if state == "mean":
            cands = torch.stack([hidden[a:b + 1].mean(0) for a, b in prompt.spans])  # the title and its ID token
        else:
            cands = torch.stack([hidden[b] for _, b in prompt.spans])  # its ID token alone
        if head:
            user, cands = model.user_item_head["users"](user), model.user_item_head["candidates"](cands)
        target = lists[r].tolist().index(int(batch["item_id"][r]))
        cos = torch.stack([F.cosine_similarity(user, c, dim=0) for c in cands]) / 0.1
        ui.append(-torch.log_softmax(cos, dim=0)[target])
        idt_q.append(projected)
        idt_items += items.tolist()
    assert torch.allclose(terms["lm"], torch.stack(lm_losses).mean(), atol=1e-4)
    assert torch.allclose(terms["user_item"], torch.stack(ui).mean(), atol=1e-4)
    # id-text: each distinct item's projected ID token (its first occurrence) against every distinct item's text
    queries = torch.cat(idt_q)
    distinct = sorted(set(idt_items))
    embedding = model.llm.get_input_embeddings()
    texts = torch.stack([embedding(torch.tensor(model.prompts.title_ids(i))).mean(0) for i in distinct])
    losses = []
    for k, item in enumerate(distinct):
        q = queries[idt_items.index(item)]
        cos = F.cosine_similarity(q.unsqueeze(0), texts, dim=1) / 0.1
        losses.append(-torch.log_softmax(cos, dim=0)[k])
    assert torch.allclose(terms["id_text"], torch.stack(losses).mean(), atol=1e-4)
    total = model.calculate_loss(batch)
    assert torch.allclose(total, terms["lm"] + 0.1 * terms["user_item"] + 0.1 * terms["id_text"], atol=1e-4)


def test_stage_one_trains_lora_alone_stage_two_adds_the_projector_and_the_encoder_never_changes(
        tiny_llm, slice_path, stage_root):
    config, model, (train, _, _) = build(tiny_llm, slice_path, stage_root)
    frozen = {n: t.clone() for n, t in model.state_dict().items()
              if n.startswith("sequence_encoder.") or (n.startswith("llm.") and "lora_" not in n)}
    batch = first_batch(train, range(8))
    for stage in (1, 2):
        model.set_stage(stage)
        model.train()
        model.zero_grad()
        trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
        assert all("lora_" in n or n.startswith("user_item_head.") or (stage == 2 and n.startswith("projector."))
                   for n in trainable)
        assert any(n.startswith("projector.") for n in trainable) == (stage == 2)
        assert any(n.startswith("user_item_head.") for n in trainable)  # the head trains in both stages
        model.calculate_loss(batch).backward()
        projector_grads = [p.grad for p in model.projector.parameters()]
        if stage == 1:
            assert all(g is None for g in projector_grads)  # no gradient at all, not a zero one
        else:
            assert all(g is not None and g.abs().sum() > 0 for g in projector_grads)
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for n, p in trainable.items() if "lora_B" in n)
        torch.optim.SGD(trainable.values(), lr=0.1).step()
        for name, before in frozen.items():
            assert torch.equal(model.state_dict()[name], before), name
        assert not model.sequence_encoder.training and not model.llm.training


def test_an_answer_is_its_candidate_s_tokens_as_the_prompt_shows_them_then_the_end_token(tiny_llm, slice_path, stage_root):
    # An answer in another form than the list's (the bare title after quoted titles) makes its first and end tokens
    # cost far more than the copied middle ones, and a per-token mean then ranks by title length.
    config, model, (_, _, test) = build(tiny_llm, slice_path, stage_root, candidate_score="sum", encoder_residual=False)
    assert model.candidate_score == "sum"  # the paper's form: the copied tokens cost about 0, the sum is the choice
    batch = first_batch(test, [0, 3])
    lists = candidate_lists(config, test._dataset)[torch.tensor([0, 3])]
    for with_ids in (False, True):
        for history, row in zip(batch["item_id_list"].tolist(), lists.tolist()):
            prompt = model.prompts.build(history, row, with_ids)
            assert len(prompt.spans) == len(row)
            for (start, end), item in zip(prompt.spans, row):
                answer = model.prompts.answer_ids(item)
                assert answer[:-1] == prompt.ids[start:end] and answer[-1] == model.prompts.eos_id
                assert model.tokenizer.decode(answer[:-1]) == f' "{test._dataset.item_title(item)}"'


def test_a_bound_shorter_than_the_longest_title_is_refused_by_name(tiny_llm, slice_path, stage_root):
    with pytest.raises(ValueError, match="max_answer_tokens 5 is shorter than the longest answer: .* raise `max_answer_tokens`"):
        build(tiny_llm, slice_path, stage_root, max_answer_tokens=5)


def test_the_pipeline_reports_rsllm_beside_its_frozen_sasrec_on_the_same_lists(tiny_llm, slice_path, stage_root):
    options = {**SMALL_RSLLM, "llm_path": tiny_llm, "data_path": slice_path, "cf_checkpoint_dir": stage_root,
               "stage1_epochs": 1, "stage2_epochs": 1, "train_rows_per_epoch": 16, "eval_rows": 12}
    out = run_recbole_cora("RSLLM", "ml100k-slice", config_dict=options)
    # encoder_residual (the default): the fused score, the user-item logit alone and SASRec's own, on the same lists
    assert set(out["results"]) == {"RSLLM", "RSLLM (LLM score alone)", "SASRec (frozen sequential encoder)"}
    assert "residual_gate" in out["results"]["RSLLM"]
    assert "valid_ratio" not in out["results"]["RSLLM (LLM score alone)"]  # the greedy answers are not generated twice
    rsllm = out["results"]["RSLLM"]
    assert rsllm["users"] == 12 and 0 <= rsllm["valid_ratio"] <= 1 and 0 <= rsllm["hit_ratio@1_all"] <= rsllm["valid_ratio"]
    assert 0 <= rsllm["hit@1"] <= rsllm["hit@5"] <= 1
    assert "| RSLLM | users | 12 |" in out["table"] and "ValidRatio" in out["table"]
    # the saved run, loaded back: the same test metrics, and a user's list ranked by the same scores
    from recbole_cora import load_run

    run = load_run(out["results_dir"])
    again = run.evaluate("test")
    for key in ("hit@1", "hit@5", "ndcg@10", "valid_ratio", "hit_ratio@1_all"):
        assert again[key] == pytest.approx(rsllm[key], abs=1e-9), key
    rows = run.recommend(["5", "7"], k=3, candidates=6)
    assert [r["rank"] for r in rows] == [1, 2, 3, 1, 2, 3] and all(r["title"] for r in rows)
    assert all(r["source"] == "SASRec top 6" for r in rows)
    assert rows[0]["score"] >= rows[1]["score"] >= rows[2]["score"]


def test_a_dataset_without_titles_is_refused_before_anything_trains(tiny_llm, slice_path, stage_root):
    from recbole_cora.checks import OptionError, check_run

    options = {**SMALL_RSLLM, "llm_path": tiny_llm, "data_path": slice_path, "cf_checkpoint_dir": stage_root,
               "text_fields": []}
    config = Config("RSLLM", "ml100k-slice", config_dict=options, check=False)
    with pytest.raises(OptionError, match="RSLLM reads item text: set `text_fields`"):
        check_run(config, RSLLM)


def test_the_plan_shows_the_first_test_user_s_prompt_with_its_list(tiny_llm, slice_path, stage_root):
    from recbole_cora.plan import describe_prompt

    config, model, (_, _, test) = build(tiny_llm, slice_path, stage_root)
    lists = candidate_lists(config, test._dataset)
    title, text = describe_prompt(model, test._dataset.inter_feat, lists)
    ids = model.build_prompts(test._dataset.inter_feat[:1]["item_id_list"], lists[:1])[0].ids
    assert title == f"example prompt (the first test user and its candidate list, {len(ids)} tokens):"
    for item in lists[0].tolist():  # every candidate's title, in list order
        assert model.prompts.raw_titles[item] in text
    # the text reads as the ids do (pieces tokenized apart may merge differently; the words are the same)
    assert model.tokenizer.decode(ids).split() == text.split()


def test_a_bad_template_or_placeholder_is_refused_before_anything_trains(tiny_llm, slice_path, stage_root):
    from recbole_cora.checks import OptionError, check_run

    options = {**SMALL_RSLLM, "llm_path": tiny_llm, "data_path": slice_path, "cf_checkpoint_dir": stage_root,
               "rsllm_prompt_template": "History: {history}. Next:", "placeholder_token": "two words"}
    config = Config("RSLLM", "ml100k-slice", config_dict=options, check=False)
    with pytest.raises(OptionError) as caught:
        check_run(config, RSLLM)
    assert "rsllm_prompt_template must contain the slot {candidates}" in str(caught.value)
    config = Config("RSLLM", "ml100k-slice", config_dict={**options, "rsllm_prompt_template": "{history} {candidates}"},
                    check=False)
    with pytest.raises(OptionError, match="placeholder_token 'two words' is not one token"):
        check_run(config, RSLLM)
    config = Config("RSLLM", "ml100k-slice", config_dict={**options, "rsllm_prompt_template": "{history} {candidates}",
                                                          "placeholder_token": None, "encoder_residual": True,
                                                          "candidate_score": "sum"}, check=False)
    with pytest.raises(OptionError, match="encoder_residual adds .* set `candidate_score: user_item`"):
        check_run(config, RSLLM)
    config = Config("RSLLM", "ml100k-slice", config_dict={**options, "rsllm_prompt_template": "{history} {candidates}",
                                                          "placeholder_token": None, "encoder_residual": False,
                                                          "candidate_score": "sum", "user_item_weight": 0.0,
                                                          "hidden_norm": "standardize"}, check=False)
    with pytest.raises(OptionError, match="hidden_norm: standardize changes the user-item cosine only"):
        check_run(config, RSLLM)


def test_hidden_norm_standardises_users_and_candidates_by_each_stage_s_calibration_rows_and_is_saved(
        tiny_llm, slice_path, stage_root):
    config, model, (train, _, test) = build(tiny_llm, slice_path, stage_root, candidate_score="user_item",
                                            encoder_residual=False, hidden_norm="standardize",
                                            user_item_head_size=None)
    assert sum(len(h) for h, _ in model.calibration) == RSLLM.CALIBRATION_ROWS
    assert int(model.hidden_norm_stage) == 0
    model.set_stage(1)
    model.train()
    rng = torch.get_rng_state()
    first = model.calculate_loss(first_batch(train, range(4)))  # the first step reads the statistics first
    assert int(model.hidden_norm_stage) == 1
    torch.set_rng_state(rng)
    again = model.calculate_loss(first_batch(train, range(4)))  # read already: the same lists and dropout
    assert torch.equal(first, again)  # the reading drew nothing from the run's RNG (a resumed run stays exact)
    norms = model.hidden_norm
    assert int(norms["users"].rows_seen) == RSLLM.CALIBRATION_ROWS
    assert int(norms["candidates"].rows_seen) == RSLLM.CALIBRATION_ROWS * model.train_count
    model.eval()
    with torch.no_grad():  # the calibration rows' own states come out with mean 0 and spread 1 per dimension
        users, candidates = [], []
        for history, lists in model.calibration:
            prompts = model.build_prompts(history, lists)
            embeds, mask, _, _ = model.embed(prompts, history=history)
            u, c = model.user_and_candidate_states(embeds, mask, prompts)
            users.append(u)
            candidates.append(c.flatten(0, 1))
        z = norms["candidates"].standardise(torch.cat(candidates))
        assert z.mean(0).abs().max() < 1e-3 and torch.allclose(z.var(0, unbiased=False), torch.ones(z.shape[1]), atol=1e-2)
        assert torch.allclose(norms["users"].mean, torch.cat(users).float().mean(0), atol=1e-4)
        # the score is the cosine of the standardised states, over the temperature
        rows = [0, 5]
        batch = first_batch(test, rows)
        lists = candidate_lists(config, test._dataset)[torch.tensor(rows)]
        prompts = model.build_prompts(batch["item_id_list"], lists)
        embeds, mask, _, _ = model.embed(prompts, history=batch["item_id_list"])
        u, c = model.user_and_candidate_states(embeds, mask, prompts)
        expected = F.cosine_similarity(norms["users"].standardise(u).unsqueeze(1),
                                       norms["candidates"].standardise(c), dim=-1) / model.temperatures["user_item"]
    scores = model.candidate_scores(batch, lists)
    assert torch.allclose(scores, expected, atol=1e-4)
    stage_one_mean = norms["candidates"].mean.clone()
    model.set_stage(2)  # the text-ID prompt: read again at the weights stage 2 starts from
    model.candidate_scores(batch, lists)
    assert int(model.hidden_norm_stage) == 2 and not torch.allclose(norms["candidates"].mean, stage_one_mean)
    saved = model.trainable_state_dict()
    assert {"hidden_norm_stage", "hidden_norm.users.mean", "hidden_norm.candidates.variance"} <= set(saved)
    _, loaded, _ = build(tiny_llm, slice_path, stage_root, candidate_score="user_item", encoder_residual=False,
                         hidden_norm="standardize", user_item_head_size=None)
    loaded.load_state_dict({**model.state_dict()}, strict=False)
    loaded.set_stage(2)
    loaded.eval()
    calls = []
    loaded.calibrate_hidden = lambda: calls.append(1)
    assert torch.allclose(loaded.candidate_scores(batch, lists), model.candidate_scores(batch, lists), atol=1e-5)
    assert not calls  # a loaded model scores with the saved statistics, never reads them again
    _, paper, _ = build(tiny_llm, slice_path, stage_root)
    assert paper.hidden_norm is None and not any(k.startswith("hidden_norm") for k in paper.trainable_state_dict())


def test_user_item_head_maps_each_side_before_the_cosine_trains_at_its_own_rate_and_is_saved(
        tiny_llm, slice_path, stage_root):
    config, model, (train, _, test) = build(tiny_llm, slice_path, stage_root, candidate_score="user_item",
                                            encoder_residual=False, user_item_head_size=8, user_item_head_lr=0.05)
    head = model.user_item_head
    assert head["users"].out_features == head["candidates"].out_features == 8
    groups = model.parameter_groups()
    assert len(groups) == 2 and groups[1]["lr"] == 0.05
    assert {id(p) for p in groups[1]["params"]} == {id(p) for p in head.parameters()}
    assert not {id(p) for p in groups[0]["params"]} & {id(p) for p in head.parameters()}
    model.eval()
    rows = [0, 5]
    batch = first_batch(test, rows)
    lists = candidate_lists(config, test._dataset)[torch.tensor(rows)]
    with torch.no_grad():  # the score: the cosine of the two maps' outputs, over the temperature
        prompts = model.build_prompts(batch["item_id_list"], lists)
        embeds, mask, _, _ = model.embed(prompts, history=batch["item_id_list"])
        u, c = model.user_and_candidate_states(embeds, mask, prompts)
        expected = F.cosine_similarity(head["users"](u).unsqueeze(1), head["candidates"](c), dim=-1) \
            / model.temperatures["user_item"]
    assert torch.allclose(model.candidate_scores(batch, lists), expected, atol=1e-5)
    for stage in (1, 2):  # the head trains in both stages, from the user-item term
        model.set_stage(stage)
        model.train()
        model.zero_grad()
        model.loss_terms(first_batch(train, range(4)))["user_item"].backward()
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in head.parameters())
    saved = model.trainable_state_dict()
    assert {"user_item_head.users.weight", "user_item_head.candidates.bias"} <= set(saved)
    _, plain, _ = build(tiny_llm, slice_path, stage_root, user_item_head_size=None)
    assert plain.user_item_head is None and len(plain.parameter_groups()) == 1


def test_user_item_layer_outside_the_llm_s_layers_is_refused_by_name(tiny_llm, slice_path, stage_root):
    with pytest.raises(ValueError, match="user_item_layer 3: the LLM has 2 decoder layers; use 1 to 2"):
        build(tiny_llm, slice_path, stage_root, user_item_layer=3)


def test_user_item_head_is_refused_where_nothing_reads_the_cosine(tiny_llm, slice_path):
    from recbole_cora.checks import OptionError, check_run

    options = {**SMALL_RSLLM, "llm_path": tiny_llm, "data_path": slice_path, "encoder_residual": False,
               "candidate_score": "sum", "user_item_weight": 0.0, "user_item_head_size": 16}
    config = Config("RSLLM", "ml100k-slice", config_dict=options, check=False)
    with pytest.raises(OptionError, match="user_item_head_size maps the states of the user-item cosine"):
        check_run(config, RSLLM)
    config = Config("RSLLM", "ml100k-slice", config_dict={**options, "user_item_head_size": None, "user_item_layer": 1},
                    check=False)
    with pytest.raises(OptionError, match="user_item_layer chooses the states of the user-item cosine"):
        check_run(config, RSLLM)
