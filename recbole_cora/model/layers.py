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
