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
