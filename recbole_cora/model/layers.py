"""Shared blocks of the LLM recommenders."""

import torch
import torch.nn.functional as F
from torch import nn


class CollaborativeQueryGenerator(nn.Module):
    r"""CoRA's collaborative query generator (Q-Former style).

    N learnable queries attend to themselves and, by cross-attention, to one key/value token made from
    the concatenated frozen CF embeddings [e_u; e_i]. The outputs are projected to d_model * r values,
    averaged over the queries, L2-normalised and reshaped into A_b \in R^{d_model x r}: the low-rank
    factor of this (user, item) pair's weight delta.
    """

    def __init__(self, cf_dim, d_model, rank, num_queries=4, width=512, layers=8, heads=8, dropout=0.1):
        super().__init__()
        self.d_model, self.rank = d_model, rank
        self.queries = nn.Parameter(torch.randn(1, num_queries, width) * 0.02)
        self.cf_proj = nn.Linear(cf_dim, width)
        layer = nn.TransformerDecoderLayer(
            d_model=width, nhead=heads, dim_feedforward=4 * width, dropout=dropout, batch_first=True, norm_first=True
        )
        self.blocks = nn.TransformerDecoder(layer, num_layers=layers, norm=nn.LayerNorm(width))
        self.to_lora = nn.Linear(width, d_model * rank)

    def forward(self, user_emb, item_emb):
        memory = self.cf_proj(torch.cat([user_emb, item_emb], dim=-1)).unsqueeze(1)  # (B, 1, width)
        queries = self.queries.expand(user_emb.shape[0], -1, -1)
        hidden = self.blocks(queries, memory)  # self-attention + cross-attention to [e_u; e_i]
        # the mean over queries commutes with the linear projection: average first, project once (N x fewer FLOPs)
        A = F.normalize(self.to_lora(hidden.mean(dim=1)), dim=-1)
        return A.view(-1, self.d_model, self.rank)


class MetaLoRAGates(nn.Module):
    r"""RecLoRA's soft routing: for each target module m a gate LayerNorm -> Linear -> ReLU -> Dropout ->
    Linear(N) turns the frozen recommender's representation u of a sample into mixing weights
    alpha_m = softmax(gate_m(u) / tau) over that module's N meta-LoRAs."""

    def __init__(self, keys, input_size, num_loras, hidden_size=256, temperature=5.0, dropout=0.1):
        super().__init__()
        self.keys = list(keys)
        self.temperature = temperature
        self.gates = nn.ModuleDict({
            key: nn.Sequential(
                nn.LayerNorm(input_size), nn.Linear(input_size, hidden_size), nn.ReLU(), nn.Dropout(dropout),
                nn.Linear(hidden_size, num_loras),
            )
            for key in self.keys
        })

    def forward(self, representation):
        """(batch, modules, N) mixing weights, modules in the order of ``keys``."""
        logits = torch.stack([self.gates[key](representation) for key in self.keys], dim=1)
        return torch.softmax(logits / self.temperature, dim=-1)


class MFormer(nn.Module):
    r"""Laser's M-Former: a Q-Former-style querying transformer with a mixture of query experts.

    K experts of L learnable query tokens each. A router (one linear layer over each history item's embedding)
    gives every history item a distribution over the experts; averaged over the user's real history items, its
    top-1 expert is the user's. That expert's queries attend to themselves in every block and, by cross-attention
    in every ``cross_every``-th block (BLIP-2's Q-Former places it every other block), to the history embeddings.
    The outputs, projected to the LLM's width, are the prompt's prefix virtual tokens.

    The top-1 choice is made differentiable as in Switch Transformers without changing the forward value: the
    output is multiplied by g / stop_gradient(g) (= 1), g the chosen expert's averaged probability.
    """

    def __init__(self, input_size, d_model, num_experts=8, num_queries=32, width=768, layers=12, heads=12,
                 cross_every=2, dropout=0.1):
        super().__init__()
        self.num_experts = num_experts
        self.queries = nn.Parameter(torch.randn(num_experts, num_queries, width) * 0.02)
        self.router = nn.Linear(input_size, num_experts)
        self.input_proj = nn.Linear(input_size, width)
        blocks = []
        for index in range(layers):
            kind = nn.TransformerDecoderLayer if index % cross_every == 0 else nn.TransformerEncoderLayer
            blocks.append(kind(d_model=width, nhead=heads, dim_feedforward=4 * width, dropout=dropout,
                               batch_first=True, norm_first=True))
        self.blocks = nn.ModuleList(blocks)
        self.norm = nn.LayerNorm(width)
        self.to_llm = nn.Linear(width, d_model)

    def route(self, history, mask):
        """(per-item expert probabilities (batch, len, K), the user's averaged probabilities (batch, K))."""
        item_probs = torch.softmax(self.router(history), dim=-1)
        weights = mask.unsqueeze(-1).to(item_probs.dtype)
        user_probs = (item_probs * weights).sum(1) / weights.sum(1).clamp(min=1)
        return item_probs, user_probs

    def forward(self, history, mask):
        """``history`` (batch, len, input_size) item embeddings, ``mask`` (batch, len) True for real items.
        Returns (prefix tokens (batch, L, d_model), per-item expert probabilities)."""
        mask = mask.clone()
        mask[:, 0] |= ~mask.any(dim=1)  # a row without history attends to its padding rather than to nothing
        item_probs, user_probs = self.route(history, mask)
        expert = user_probs.argmax(dim=-1)
        gate = user_probs.gather(1, expert.unsqueeze(1))
        hidden = self.queries[expert]
        memory = self.input_proj(history)
        for block in self.blocks:
            if isinstance(block, nn.TransformerDecoderLayer):
                hidden = block(hidden, memory, memory_key_padding_mask=~mask)
            else:
                hidden = block(hidden)
        out = self.to_llm(self.norm(hidden))
        return out * (gate / gate.detach()).unsqueeze(-1), (item_probs, mask)


def load_balance_loss(item_probs, mask):
    r"""Switch-style load balancing over history items: K \sum_j f_j P_j, with f_j the share of real history items
    whose most probable expert is j and P_j the mean probability of expert j over those items (1 when balanced)."""
    probs = item_probs[mask]  # (items, K)
    if len(probs) == 0:
        return item_probs.sum() * 0
    num_experts = probs.shape[-1]
    share = F.one_hot(probs.argmax(dim=-1), num_experts).float().mean(0)
    return num_experts * (share * probs.mean(0)).sum()


CHI2_1DOF_95 = 3.841  # the 95th percentile of chi-square with one degree of freedom


class EncoderResidual(nn.Module):
    r"""Ours (``encoder_residual``): a (user, item) pair's score is the frozen recommender's own score plus the LLM's
    score times a gate g, fitted on the valid split after training (``fit``): the value of g that minimises the
    cross-entropy of the fused scores of the valid users' targets. g starts at 0, so the untrained model ranks exactly
    as its encoder; the LLM side trains with its own loss, as in its paper; g is the weight its score earned on
    held-out users beside the encoder's (about 0: it added nothing the encoder lacked).

    Why fitted and not trained: trained jointly through the fused score, the LLM gets no gradient while g is 0 and g
    drifts with the untrained LLM's noise (on the planted cycle of ``tests/test_planted.py`` it ended at -0.05 and the
    ranking stayed the encoder's); trained on the training rows with the LLM's score detached, g is fitted to scores
    the LLM has already fitted to those rows, and over-trusts them (RSLLM on the planted cycle: g 3.2, the fused lists
    0.70 NDCG@10 against the encoder's 0.79)."""

    def __init__(self):
        super().__init__()
        self.register_buffer("gate", torch.zeros((), dtype=torch.float64))

    def forward(self, encoder_scores, llm_scores):
        encoder_scores = encoder_scores.detach().to(device=llm_scores.device, dtype=llm_scores.dtype)
        return encoder_scores + self.gate.to(llm_scores.dtype) * llm_scores

    @staticmethod
    def best_gate(encoder_scores, llm_scores, target, iterations=100):
        """The gate fitted to held-out rows (rows, choices; a choice the encoder scores -inf is out): the pair (a, b)
        minimising the mean cross-entropy of softmax(a encoder + b llm) at ``target`` (a logistic regression of the
        two scores, convex: Newton's method from (1, 0), steps halved until the loss falls), and g = b / a, the
        ranking's weight of the LLM beside the encoder (the encoder's scale a is fitted too, so that a
        miscalibrated encoder, too sure or too unsure, does not pass for a gain of the LLM). g is 0 unless the LLM's
        score lowers the loss significantly (a likelihood-ratio test at p < 0.05): on the embedded lists an LLM
        score at a random order's level got g 0.36 and 0.48 from 100 valid users without it, and the fused lists
        ranked a little below SASRec's. Returns (g, loss of the encoder alone at its best scale, loss with g)."""
        encoder = encoder_scores.double()
        finite = torch.isfinite(encoder)
        features = torch.stack([torch.where(finite, encoder, torch.zeros((), dtype=torch.float64)),
                                torch.where(finite, llm_scores.double(), torch.zeros((), dtype=torch.float64))], dim=-1)
        target = target.long().view(-1)
        rows = torch.arange(len(target))

        def loss_of(weights):
            logits = (features @ weights).masked_fill(~finite, -float("inf"))
            return (torch.logsumexp(logits, dim=1) - logits[rows, target]).mean()

        def fit(weights, free):
            loss = loss_of(weights)
            for _ in range(iterations):
                logits = (features @ weights).masked_fill(~finite, -float("inf"))
                probs = torch.softmax(logits, dim=1).unsqueeze(-1)
                mean = (probs * features).sum(dim=1)
                gradient = (mean - features[rows, target]).mean(dim=0) * free
                centred = features - mean.unsqueeze(1)
                hessian = torch.einsum("rc,rci,rcj->ij", probs.squeeze(-1), centred, centred) / len(target)
                hessian = hessian * free.outer(free) + torch.diag(1 - free) + 1e-9 * torch.eye(2, dtype=torch.float64)
                step = torch.linalg.solve(hessian, gradient)
                for _ in range(30):  # halve the step until the loss falls
                    trial = weights - step
                    trial_loss = loss_of(trial)
                    if trial_loss <= loss:
                        break
                    step = step / 2
                else:
                    break
                weights, improvement, loss = trial, float(loss - trial_loss), trial_loss
                if improvement < 1e-10:
                    break
            return weights, float(loss)

        one = torch.tensor([1.0, 0.0], dtype=torch.float64)
        _, alone = fit(one, torch.tensor([1.0, 0.0], dtype=torch.float64))
        weights, fused = fit(one, torch.ones(2, dtype=torch.float64))
        a, b = float(weights[0]), float(weights[1])
        # the LLM's score enters only where the held-out rows show it adds something: a likelihood-ratio test of the
        # one added weight (2 n (loss alone - loss fused) against chi-square with 1 degree of freedom, p < 0.05)
        if 2 * len(target) * (alone - fused) < CHI2_1DOF_95 or a <= 0:
            return 0.0, alone, alone
        return b / a, alone, fused

    def extra_repr(self):
        return f"gate={float(self.gate):.4g}"
