r"""Laser: a frozen LLM reads a user's history through an M-Former prefix and answers with a vector.

Reference:
    Xinyu Zhang, Linmei Hu, Luhao Zhang, Dandan Song, Heyan Huang and Liqiang Nie. "Laser: Parameter-Efficient
    LLM Bi-Tuning for Sequential Recommendation with Collaborative Information." arXiv:2409.01605, 2024.

Reference code:
    https://github.com/015xy/Laser-main (its M-Former path returns zeros; this file follows the paper)

A frozen sequential recommender (RecBole's BERT4Rec by default) embeds the user's history items; the M-Former
(``recbole_cora.model.layers.MFormer``) routes them to one of K query experts and turns them into L prefix
virtual tokens; the prompt (the last ``history_len`` titles) follows; one trainable suffix token ends it, and its
last hidden state, projected, is the user vector h_u. An item's vector h_i comes from the same template with that
item alone. Score cos(h_u, h_i)/tau over all items; loss InfoNCE over all items + lambda K sum_j f_j P_j.
Stage 1 recomputes the item matrix whenever a step made it stale (before the next epoch or evaluation), so a saved
model's matrix is always its own weights'; stage 2 keeps the best one fixed and trains on. Options
(``properties/model/Laser.yaml``, measured in ``benchmarks/QUALITY.md``): the batch's target items encoded with
gradient in each step, vectors centred on the mean item vector, a whole refresh every N steps.
``vector_layer`` (ours) reads the suffix state at a middle decoder layer instead of the last.
``item_projection: separate`` (ours) gives the item side its own projection: the item matrix caches the items'
suffix states and the item projection maps them in every step, so it learns from every item's logit.
``hidden_norm: standardize`` (ours) standardises the suffix state per dimension before the projection, by its
mean and spread over the first items at the untrained weights.
Trained: the M-Former (router, queries, blocks, projections), the suffix token and the output projection (and the
item projection in stage 1, with ``item_projection: separate``).
"""

import torch
from torch import nn

from recbole_cora.data.prompts import PromptBuilder
from recbole_cora.llm.loading import execution_device
from recbole_cora.llm.scoring import Standardiser, decoder_layer, hidden_at
from recbole_cora.model.next_item_llm_recommender import NextItemLLMRecommender
from recbole_cora.model.encoders import FrozenSequentialRecommender
from recbole_cora.model.layers import MFormer, load_balance_loss


class Laser(NextItemLLMRecommender):
    prompt_templates = {"laser_prompt_template": (("history",), (), ())}
    stage_starts_from_best = True  # stage 2 starts from stage 1's best model and its item matrix
    CALIBRATION_ITEMS = 2048  # hidden_norm: standardize reads the first this many items' states

    def __init__(self, config, dataset):
        super().__init__(config, dataset, vector_size=config["user_vector_size"])
        if not config["sequence_stage_dir"]:
            raise ValueError("Laser reads its frozen sequential recommender from `sequence_stage_dir`: run its stage first (the pipeline does).")
        self.sequence_encoder = FrozenSequentialRecommender.from_stage(config["sequence_stage_dir"], dataset)
        self.prompts = PromptBuilder(config, dataset, self.tokenizer, option="laser_prompt_template",
                                     context_length=self.context_length, with_target=False)
        self.mformer = MFormer(
            self.sequence_encoder.embedding_size, self.d_model, num_experts=config["num_experts"],
            num_queries=config["num_queries"], width=config["mformer_width"], layers=config["mformer_layers"],
            heads=config["mformer_heads"], cross_every=config["cross_attention_every"], dropout=config["mformer_dropout"],
        )
        # the suffix token starts like a word of the LLM: drawn with the spread of its input embeddings
        spread = float(self.llm.get_input_embeddings().weight.float().std())
        self.suffix = nn.Parameter(torch.randn(self.d_model) * spread)
        self.projection = nn.Linear(self.d_model, self.vector_size)
        # item_projection: separate (ours): the items' own map, over suffix states the item matrix caches
        self.item_projection = None
        if (config["item_projection"] or "shared") == "separate":
            self.item_projection = nn.Linear(self.d_model, self.vector_size)
            self.item_matrix = torch.zeros(self.n_items, self.d_model)
        # hidden_norm: standardize (``Standardiser``): the suffix state's shared part removed before the projection
        self.hidden_norm = Standardiser(self.d_model, min(self.n_items - 1, self.CALIBRATION_ITEMS)) \
            if (config["hidden_norm"] or "none") == "standardize" else None
        self.calibration_batch = int(config["eval_batch_size"] or 64)
        self.vector_layer = decoder_layer(self.llm, config["vector_layer"], "vector_layer")  # ours (~: the last)
        self.balance_weight = float(config["balance_weight"])
        self.stages = self.stages_of(config)
        self.set_stage(1)

    @classmethod
    def required_stages(cls, config):
        return {"sequence": "sequence_stage_dir"}

    @classmethod
    def option_problems(cls, config):
        problems = super().option_problems(config)
        width, heads = config["mformer_width"], config["mformer_heads"]
        if width and heads and int(width) % int(heads):
            problems.append(f"mformer_width {width} is not a multiple of mformer_heads {heads}: each attention head of "
                            f"the M-Former takes an equal share of its width (e.g. mformer_heads: "
                            f"{next(h for h in (8, 4, 2, 1) if int(width) % h == 0)}).")
        if (config["item_projection"] or "shared") == "separate" and config["center_vectors"]:
            problems.append("center_vectors does nothing useful with item_projection: separate (the item projection's "
                            "bias can centre the items itself, and it changes every step): set one of them back "
                            "(center_vectors: False).")
        return problems

    @classmethod
    def plan_lines(cls, config, n_items, steps_per_epoch):
        """Every item goes through the LLM once before stage 1, once after each stage-1 epoch (its weights trained)
        and every ``item_refresh_steps`` within one; stage 2 keeps the matrix. On a large catalogue these passes cost
        more than the steps (the time line after the first steps measures one)."""
        epochs = int(config["stage1_epochs"] or config["epochs"])
        refresh = int(config["item_refresh_steps"] or 0)
        within = (steps_per_epoch - 1) // refresh if refresh else 0
        passes = 1 + epochs * (1 + within)
        lines = [f"  items     the item matrix: all {n_items:,} items through the LLM {passes} times (before stage 1 and "
                 f"after each of its {epochs} epoch(s){f', and every {refresh} steps' if refresh else ''}); "
                 "stage 2 keeps it fixed"]
        if (config["hidden_norm"] or "none") == "standardize":
            lines.append(f"  items     hidden_norm: the first {min(n_items, cls.CALIBRATION_ITEMS):,} items through the LLM "
                         "once more before stage 1 (the suffix state's mean and spread)")
        return lines

    def reference_encoder(self):
        return self.sequence_encoder

    @classmethod
    def stages_of(cls, config):
        return [1, 2] if config["stage2_epochs"] else [1]

    def training_stages(self):
        return list(self.stages)

    def set_stage(self, stage):
        """Stage 1: the item matrix follows the weights (recomputed when a step made it stale, before the next epoch
        or evaluation, and every ``item_refresh_steps``); stage 2: it stays as it is and only the user side trains."""
        if stage not in (1, 2):
            raise ValueError(f"Laser has stages 1 and 2, not {stage!r}.")
        self.stage = stage
        self.freeze_item_matrix(stage == 2)
        if self.item_projection is not None:
            self.item_projection.requires_grad_(stage == 1)

    def prompt_lengths(self, interaction):
        return self.prompts.lengths(*self.prompts.rows(interaction, with_target=False))

    def suffix_states(self, history, token_rows):
        """The suffix's last hidden state for histories (batch, len) of item ids and their prompts' token id lists
        ([M-Former prefix; prompt; suffix] through the frozen LLM), and the M-Former's load-balancing term."""
        inputs, attention, suffix_at, balance = self.suffix_inputs(history, token_rows)
        return hidden_at(self.llm, inputs, attention, suffix_at, self.vector_layer), balance

    def suffix_inputs(self, history, token_rows):
        """The LLM's input embeddings [M-Former prefix; prompt; suffix] and attention mask for histories and their
        prompts, each row's suffix position, and the M-Former's load-balancing term."""
        embedding = self.llm.get_input_embeddings()
        device = execution_device(embedding)
        mask = history > 0
        items = self.sequence_encoder.item_embeddings(history).detach()
        prefix, (item_probs, routed) = self.mformer(items.to(self.suffix.device), mask.to(self.suffix.device))
        input_ids, token_mask = self.prompts.pad(token_rows, device)
        tokens = embedding(input_ids)
        batch, width = tokens.shape[0], prefix.shape[1] + tokens.shape[1] + 1
        suffix_at = prefix.shape[1] + token_mask.sum(dim=1)  # right after each row's last real token
        inputs = torch.cat([prefix.to(tokens), tokens, tokens.new_zeros(batch, 1, tokens.shape[-1])], dim=1)
        where = torch.arange(width, device=device).unsqueeze(0) == suffix_at.unsqueeze(1)
        inputs = torch.where(where.unsqueeze(-1), self.suffix.to(tokens), inputs)
        attention = (torch.arange(width, device=device).unsqueeze(0) <= suffix_at.unsqueeze(1)).long()
        return inputs, attention, suffix_at, load_balance_loss(item_probs, routed)

    def encode(self, history, token_rows):
        """Vectors for histories and their prompts: the suffix's state (``read_states``) projected; and the
        weighted load-balancing term."""
        hidden, balance = self.read_states(history, token_rows)
        return self.projection(hidden.to(self.projection.weight)), balance

    def read_states(self, history, token_rows):
        """The suffix's state that the projections read (standardised with ``hidden_norm: standardize``), and the
        weighted load-balancing term."""
        hidden, balance = self.suffix_states(history, token_rows)
        if self.hidden_norm is not None:
            if not self.hidden_norm.calibrated:
                self.calibrate_hidden()
            hidden = self.hidden_norm.standardise(hidden)
        return hidden, self.balance_weight * balance

    @torch.no_grad()
    def calibrate_hidden(self):
        """``hidden_norm: standardize``: the mean and spread of the first items' suffix states with the weights as
        they are (untrained, before stage 1's first step: the first item-matrix pass calls this), the same items in
        every process; fixed afterwards and saved with the model."""
        was_training = self.training
        self.eval()
        try:
            ids = torch.arange(1, 1 + self.hidden_norm.calibration_rows)
            for batch in ids.split(self.calibration_batch):
                token_rows = self.prompts.token_ids([[int(i)] for i in batch], [0] * len(batch))
                self.hidden_norm.calibrate(self.suffix_states(batch.view(-1, 1).to(self.item_matrix.device), token_rows)[0])
        finally:
            self.train(was_training)

    def learned_buffers(self):
        return super().learned_buffers() | ({f"hidden_norm.{name}" for name, _ in self.hidden_norm.named_buffers()}
                                            if self.hidden_norm is not None else set())

    def user_vectors(self, interaction):
        history = interaction[self.ITEM_SEQ]
        token_rows = self.prompts.token_ids(*self.prompts.rows(interaction, with_target=False))
        return self.encode(history, token_rows)

    def item_vectors(self, item_ids):
        history = item_ids.view(-1, 1).to(self.item_matrix.device)
        token_rows = self.prompts.token_ids([[int(i)] for i in item_ids], [0] * len(item_ids))
        if self.item_projection is not None:  # the matrix caches the states; item_head projects them
            return self.read_states(history, token_rows)[0]
        return self.encode(history, token_rows)[0]

    def item_head(self, cached):
        if self.item_projection is None:
            return cached
        return self.item_projection(cached.to(self.item_projection.weight))
