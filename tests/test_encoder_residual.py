"""The encoder residual (ours, ``encoder_residual`` of Laser and RSLLM): score = the frozen recommender's own score + g x
the LLM's, g fitted on held-out rows by a logistic regression of the two scores (``EncoderResidual.best_gate``)."""

import torch

from recbole_cora.model.layers import EncoderResidual


def rows(n=400, choices=20, seed=0):
    generator = torch.Generator().manual_seed(seed)
    target = torch.randint(0, choices, (n,), generator=generator)
    onehot = torch.nn.functional.one_hot(target, choices).double()
    return target, onehot, generator


def test_an_llm_score_that_carries_the_target_earns_a_weight_and_lowers_the_loss():
    target, onehot, generator = rows()
    encoder = 1.0 * onehot + torch.randn(onehot.shape, generator=generator, dtype=torch.float64)
    llm = 2.0 * onehot + torch.randn(onehot.shape, generator=generator, dtype=torch.float64)
    gate, alone, fused = EncoderResidual.best_gate(encoder, llm, target)
    assert gate > 0.5 and fused < alone - 0.1, (gate, alone, fused)


def test_an_llm_score_of_noise_earns_about_nothing():
    target, onehot, generator = rows()
    encoder = 2.0 * onehot + torch.randn(onehot.shape, generator=generator, dtype=torch.float64)
    llm = torch.randn(onehot.shape, generator=generator, dtype=torch.float64)
    gate, alone, fused = EncoderResidual.best_gate(encoder, llm, target)
    assert gate == 0.0 and fused == alone, (gate, alone, fused)  # not significant: the encoder ranks alone


def test_a_weak_but_real_llm_score_passes_the_test_on_enough_rows():
    target, onehot, generator = rows(n=3000)
    encoder = 2.0 * onehot + torch.randn(onehot.shape, generator=generator, dtype=torch.float64)
    llm = 0.3 * onehot + torch.randn(onehot.shape, generator=generator, dtype=torch.float64)
    gate, alone, fused = EncoderResidual.best_gate(encoder, llm, target)
    assert gate > 0 and 2 * 3000 * (alone - fused) > 3.841, (gate, alone, fused)


def test_the_encoder_s_scale_is_fitted_so_its_calibration_is_not_credited_to_the_llm():
    # an encoder ten times too sure of itself: the fused ranking, encoder + g x llm, is the same at either scale
    target, onehot, generator = rows()
    encoder = 1.0 * onehot + torch.randn(onehot.shape, generator=generator, dtype=torch.float64)
    llm = 1.0 * onehot + torch.randn(onehot.shape, generator=generator, dtype=torch.float64)
    gate, _, _ = EncoderResidual.best_gate(encoder, llm, target)
    gate_sure, _, _ = EncoderResidual.best_gate(10 * encoder, llm, target)
    assert abs(gate_sure - 10 * gate) < 1e-4 * abs(gate_sure), (gate, gate_sure)
    assert torch.equal((encoder + gate * llm).argsort(dim=1), (10 * encoder + gate_sure * llm).argsort(dim=1))


def test_a_choice_the_encoder_rules_out_never_counts():
    target, onehot, generator = rows(choices=6)
    target = target.clamp(min=1)  # column 0 is the padding item
    onehot = torch.nn.functional.one_hot(target, 6).double()
    encoder = onehot + torch.randn(onehot.shape, generator=generator, dtype=torch.float64)
    encoder[:, 0] = -float("inf")
    llm = onehot + torch.randn(onehot.shape, generator=generator, dtype=torch.float64)
    llm_loud = llm.clone()
    llm_loud[:, 0] = 1e6  # whatever the LLM says of the padding item
    assert EncoderResidual.best_gate(encoder, llm, target) == EncoderResidual.best_gate(encoder, llm_loud, target)


def test_the_fused_score_is_the_encoder_s_until_the_gate_is_fitted():
    residual = EncoderResidual()
    encoder, llm = torch.randn(3, 5), torch.randn(3, 5)
    assert torch.equal(residual(encoder, llm), encoder)
    residual.gate.fill_(0.5)
    assert torch.allclose(residual(encoder, llm), encoder + 0.5 * llm)
