import contextlib
import copy

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from recbole_cora.llm import DynamicLoRA, MixtureLoRA
from recbole_cora.llm.scoring import answer_token_ids, last_position_answer_logits


@pytest.fixture
def llm(tiny_llm):
    model = AutoModelForCausalLM.from_pretrained(tiny_llm, dtype=torch.float32)
    model.eval().requires_grad_(False)
    return model, AutoTokenizer.from_pretrained(tiny_llm)


def batch(tokenizer, texts):
    rows = [tokenizer.encode(t) for t in texts]
    width = max(map(len, rows))
    ids = torch.full((len(rows), width), tokenizer.pad_token_id)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for k, r in enumerate(rows):
        ids[k, : len(r)] = torch.tensor(r)
        mask[k, : len(r)] = 1
    return ids, mask


TEXTS = ['A user liked "Toy Story (1995)". Would they like "Heat (1995)"? #Answer:',
         'Would they like "Fargo (1996)"? #Answer:',
         'A user liked "Babe (1995)", "Casino (1995)", "Clueless (1995)". "Jumanji (1995)"? #Answer:']


def test_last_position_scoring_equals_the_full_lm_head(llm):
    model, tokenizer = llm
    ids, mask = batch(tokenizer, TEXTS)
    answers = answer_token_ids(tokenizer, ["Yes", "No"], after="#Answer:")
    fast = last_position_answer_logits(model, ids, mask, answers)
    full = model(input_ids=ids, attention_mask=mask).logits
    last = mask.sum(1) - 1
    expected = full[torch.arange(len(TEXTS)), last][:, answers]
    assert torch.allclose(fast, expected, atol=1e-5)
    # right padding does not change a row's score: each row alone gives the same logits
    for k, text in enumerate(TEXTS):
        alone = last_position_answer_logits(model, *batch(tokenizer, [text]), answers)
        assert torch.allclose(alone[0], fast[k], atol=1e-5)


def test_zero_P_leaves_the_model_exactly_unchanged(llm):
    model, tokenizer = llm
    ids, mask = batch(tokenizer, TEXTS)
    answers = answer_token_ids(tokenizer)
    base = last_position_answer_logits(model, ids, mask, answers)
    lora = DynamicLoRA(model, rank=4, alpha=8)
    A = torch.randn(len(TEXTS), lora.in_features, 4)
    with lora.weights(A):
        injected = last_position_answer_logits(model, ids, mask, answers)
    assert torch.equal(injected, base)


@pytest.mark.parametrize("autograd", [True, False], ids=["training", "inference"])
def test_batched_per_sample_delta_equals_explicitly_merged_weights(llm, autograd):
    # evaluation runs under inference mode, training with autograd: both add the same delta
    model, tokenizer = llm
    ids, mask = batch(tokenizer, TEXTS)
    answers = answer_token_ids(tokenizer)
    torch.manual_seed(0)
    lora = DynamicLoRA(model, rank=4, alpha=8, dropout=0.0)
    for p in lora.P.values():
        p.data.normal_(0, 0.5)
    A = torch.randn(len(TEXTS), lora.in_features, 4)
    with lora.weights(A), (contextlib.nullcontext() if autograd else torch.inference_mode()):
        batched = last_position_answer_logits(model, ids, mask, answers)
    assert batched.requires_grad == autograd
    batched = batched.detach().clone()
    lora.remove()
    for b, text in enumerate(TEXTS):
        merged = copy.deepcopy(model)
        modules = dict(merged.named_modules())
        for name in lora.module_names:
            P = lora.P[name.replace(".", "__")]
            modules[name].weight.data += lora.scaling * (A[b] @ P).t()  # dW_b = (A_b P_m)^T
        alone = last_position_answer_logits(merged, *batch(tokenizer, [text]), answers)
        assert torch.allclose(alone[0], batched[b], atol=1e-4), (b, alone, batched[b])
    assert not torch.allclose(batched, last_position_answer_logits(model, ids, mask, answers))


def test_a_bfloat16_llm_with_the_delta_agrees_with_float32_and_keeps_float32_parameters_and_gradients(llm):
    model, tokenizer = llm
    ids, mask = batch(tokenizer, TEXTS)
    answers = answer_token_ids(tokenizer)
    torch.manual_seed(0)
    A = torch.nn.functional.normalize(torch.randn(len(TEXTS), model.config.hidden_size * 4), dim=-1)  # as CoRA's
    A = A.view(len(TEXTS), model.config.hidden_size, 4)
    base = last_position_answer_logits(model, ids, mask, answers)
    results = {}
    for dtype in (torch.float32, torch.bfloat16):
        llm = copy.deepcopy(model).to(dtype)
        lora = DynamicLoRA(llm, rank=4, alpha=8, dropout=0.0)
        torch.manual_seed(1)
        for p in lora.P.values():
            p.data.normal_(0, 0.5)
        with lora.weights(A.requires_grad_(True)):
            logits = last_position_answer_logits(llm, ids, mask, answers)
        logits[:, 0].sum().backward()
        assert all(p.dtype == torch.float32 and p.grad.dtype == torch.float32 for p in lora.P.values())
        results[dtype] = logits.detach(), {k: p.grad for k, p in lora.P.items()}, A.grad.clone()
        A.grad = None
    (full, full_grads, full_A), (half, half_grads, half_A) = results[torch.float32], results[torch.bfloat16]
    effect, error = (full - base).abs().max(), (half - full).abs().max()
    assert error < 0.05 * effect  # bf16 rounding, far below what the delta changes
    for key, grad in full_grads.items():
        assert (half_grads[key] - grad).norm() < 0.05 * grad.norm(), key
    assert (half_A - full_A).norm() < 0.05 * full_A.norm()


def test_q_k_v_share_one_x_times_A(llm):
    model, tokenizer = llm
    lora = DynamicLoRA(model, rank=4, alpha=8)
    calls = []
    lora.dropout.register_forward_hook(lambda *args: calls.append(1))
    with lora.weights(torch.randn(len(TEXTS), lora.in_features, 4)):
        last_position_answer_logits(model, *batch(tokenizer, TEXTS), answer_token_ids(tokenizer))
    layers = model.config.num_hidden_layers
    assert len(calls) == 2 * layers  # one x A_b for q, k, v together and one for o, per layer


def test_bad_targets_and_shapes_are_named(llm):
    model, _ = llm
    with pytest.raises(ValueError, match="match no linear layer.*q_proj"):
        DynamicLoRA(model, target_modules=["query"])
    with pytest.raises(ValueError, match="different input widths"):
        DynamicLoRA(model, target_modules=["q_proj", "down_proj"])
    lora = DynamicLoRA(model, rank=4)
    with pytest.raises(ValueError, match="expected"):
        with lora.weights(torch.randn(2, 3, 4)):
            pass


def test_answer_tokens_are_found_with_and_without_a_space(llm):
    _, tokenizer = llm
    spaced = answer_token_ids(tokenizer, ["Yes", "No"], after="#Answer:")
    bare = answer_token_ids(tokenizer, ["Yes", "No"], after="#Answer: ")
    assert tokenizer.convert_ids_to_tokens(spaced) == ["ĠYes", "ĠNo"]
    assert tokenizer.convert_ids_to_tokens(bare) == ["Yes", "No"]
    with pytest.raises(ValueError, match="not a single token.*answer_words"):
        answer_token_ids(tokenizer, ["Absolutely", "No"])


# ---------------------------------------------------------------- RecLoRA's mixture of meta-LoRAs

def merged_copy(model, lora, A_by_key, B_by_key):
    """A deep copy of ``model`` with W_m + (alpha/r) (A_m B_m)^T written into every target module."""
    merged = copy.deepcopy(model)
    modules = dict(merged.named_modules())
    for name in lora.module_names:
        key = name.replace(".", "__")
        modules[name].weight.data += lora.scaling * (A_by_key[key] @ B_by_key[key]).t()
    return merged


def test_mixture_with_zero_B_leaves_the_model_exactly_unchanged(llm):
    model, tokenizer = llm
    ids, mask = batch(tokenizer, TEXTS)
    answers = answer_token_ids(tokenizer)
    base = last_position_answer_logits(model, ids, mask, answers)
    lora = MixtureLoRA(model, rank=4, alpha=8, num_loras=3)
    assert all(b.abs().sum() == 0 for b in lora.B.values()) and all(a.abs().sum() > 0 for a in lora.A.values())
    mixture = torch.softmax(torch.randn(len(TEXTS), len(lora.keys), 3), dim=-1)
    with lora.weights(mixture):
        injected = last_position_answer_logits(model, ids, mask, answers)
    assert torch.equal(injected, base)


def test_uniform_mixture_equals_the_average_lora_merged_into_the_weights(llm):
    model, tokenizer = llm
    ids, mask = batch(tokenizer, TEXTS)
    answers = answer_token_ids(tokenizer)
    torch.manual_seed(0)
    lora = MixtureLoRA(model, target_modules=["q_proj", "v_proj"], rank=4, alpha=8, dropout=0.0, num_loras=3)
    for B in lora.B.values():
        B.data.normal_(0, 0.5)
    uniform = torch.full((len(TEXTS), len(lora.keys), 3), 1 / 3)
    with lora.weights(uniform):
        batched = last_position_answer_logits(model, ids, mask, answers)
    lora.remove()
    A_avg = {key: a.data.mean(0) for key, a in lora.A.items()}
    B_avg = {key: b.data.mean(0) for key, b in lora.B.items()}
    merged = merged_copy(model, lora, A_avg, B_avg)
    assert len(lora.module_names) == 2 * model.config.num_hidden_layers
    for k, text in enumerate(TEXTS):  # every sample sees the same, averaged, LoRA
        alone = last_position_answer_logits(merged, *batch(tokenizer, [text]), answers)
        assert torch.allclose(alone[0], batched[k], atol=1e-4), (k, alone, batched[k])
    assert not torch.allclose(batched, last_position_answer_logits(model, ids, mask, answers), atol=1e-3)


def test_each_sample_gets_its_own_mixed_weights(llm):
    model, tokenizer = llm
    ids, mask = batch(tokenizer, TEXTS)
    answers = answer_token_ids(tokenizer)
    torch.manual_seed(1)
    lora = MixtureLoRA(model, rank=4, alpha=8, dropout=0.0, num_loras=4)
    for B in lora.B.values():
        B.data.normal_(0, 0.5)
    mixture = torch.softmax(3 * torch.randn(len(TEXTS), len(lora.keys), 4), dim=-1)
    with lora.weights(mixture):
        batched = last_position_answer_logits(model, ids, mask, answers)
    lora.remove()
    for b, text in enumerate(TEXTS):
        A = {key: torch.einsum("n,nir->ir", mixture[b, m], lora.A[key].data) for m, key in enumerate(lora.keys)}
        B = {key: torch.einsum("n,nro->ro", mixture[b, m], lora.B[key].data) for m, key in enumerate(lora.keys)}
        alone = last_position_answer_logits(merged_copy(model, lora, A, B), *batch(tokenizer, [text]), answers)
        assert torch.allclose(alone[0], batched[b], atol=1e-4), (b, alone, batched[b])
    # the same prompt under two mixtures gives two different scores: the weights really are per sample
    same = batch(tokenizer, [TEXTS[0], TEXTS[0]])
    lora = MixtureLoRA(model, rank=4, alpha=8, dropout=0.0, num_loras=4)
    for B in lora.B.values():
        B.data.normal_(0, 0.5)
    two = torch.stack([mixture[0], mixture[1]])
    with lora.weights(two):
        scores = last_position_answer_logits(model, *same, answers)
    assert not torch.allclose(scores[0], scores[1], atol=1e-4)


def test_mixture_shape_is_checked(llm):
    model, _ = llm
    lora = MixtureLoRA(model, rank=4, num_loras=3)
    with pytest.raises(ValueError, match=r"expected \(batch, 4, 3\)"):
        with lora.weights(torch.rand(2, 5, 3)):
            pass
