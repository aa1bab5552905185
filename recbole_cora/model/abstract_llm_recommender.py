"""What every LLM recommender of the package shares: the frozen LLM, prompts and Yes/No scoring.

A subclass says how collaborative information enters the LLM for a batch (``adapt``: a context in
which the LLM's forward is adapted, e.g. CoRA's per-sample LoRA) and which parameters it trains.
"""

import contextlib

import torch
from recbole.model.abstract_recommender import AbstractRecommender
from recbole.utils import InputType, ModelType
from torch import nn

from recbole_cora.data.prompts import PromptBuilder
from recbole_cora.llm import AnswerScorer, execution_device, load_llm


class LLMRecommender(AbstractRecommender):
    type = ModelType.CONTEXT
    input_type = InputType.POINTWISE
    uses_cf_encoder = False
    # Rows of the train split the LLM side learns from, fixed for the run (RecLoRA's Few2Many); None: all rows.
    train_row_subset = None

    def __init__(self, config, dataset):
        super().__init__()
        self.USER_ID = config["USER_ID_FIELD"]
        self.ITEM_ID = config["ITEM_ID_FIELD"]
        self.LABEL = config["LABEL_FIELD"]
        if not dataset.text_fields:
            raise ValueError(
                f"{type(self).__name__} reads item text: set `text_fields` (and `item_text_template`) for "
                f"dataset '{dataset.dataset_name}' (see docs/datasets.md)."
            )
        if dataset.history_len <= 0:
            raise ValueError(f"{type(self).__name__} shows the user's history: set `history_len` > 0.")
        self.llm, self.tokenizer = load_llm(config)
        self.gradient_checkpointing = False
        self.set_gradient_checkpointing(bool(config["gradient_checkpointing"]))
        self.prompts = PromptBuilder(config, dataset, self.tokenizer, context_length=self.context_length)
        self.scorer = AnswerScorer(self.llm, self.tokenizer, config, self.prompts.prompt_end)
        self.loss = nn.BCEWithLogitsLoss()

    def set_gradient_checkpointing(self, enabled):
        """Recompute the frozen LLM's activations in the backward pass (less memory, about one more forward)."""
        new_api = hasattr(self.llm, "activation_checkpointing_enable")  # transformers >= 5 (the old name warns)
        if enabled and new_api:
            self.llm.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        elif enabled:
            self.llm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        elif self.gradient_checkpointing:
            self.llm.activation_checkpointing_disable() if new_api else self.llm.gradient_checkpointing_disable()
        was, self.gradient_checkpointing = self.gradient_checkpointing, enabled
        if enabled or was:
            self._flag_checkpointed_layers(enabled and self.training)

    @property
    def context_length(self):
        """The LLM's context in tokens (``max_position_embeddings``), if its config says."""
        return getattr(self.llm.config, "max_position_embeddings", None)

    @property
    def d_model(self):
        return self.llm.config.hidden_size

    def adapt(self, interaction):
        """A context manager in which the LLM is adapted to this batch (none for the plain LLM)."""
        return contextlib.nullcontext()

    def adapted(self, interaction):
        """``adapt(interaction)`` for one forward. Under gradient checkpointing in training, the backward pass
        runs the LLM's forward again, which must see the same adaptation: the context then stays open until
        ``release_adaptation()`` (the trainer calls it after backward; the next forward closes it too)."""
        self.release_adaptation()
        context = self.adapt(interaction)
        if self.training and torch.is_grad_enabled() and getattr(self, "gradient_checkpointing", False):
            context.__enter__()
            self._open_adaptation = context
            return contextlib.nullcontext()
        return context

    def release_adaptation(self):
        context, self._open_adaptation = getattr(self, "_open_adaptation", None), None
        if context is not None:
            context.__exit__(None, None, None)

    def forward(self, interaction, return_loss=False):
        device = execution_device(self.llm.get_input_embeddings())
        input_ids, attention_mask = self.prompts.batch(interaction, device)
        with self.adapted(interaction):
            scores = self.scorer(self.llm, input_ids, attention_mask)
        if return_loss:  # the loss goes through forward so that a DDP-wrapped model syncs gradients
            return self.loss(scores, interaction[self.LABEL].to(scores.device).float())
        return scores

    def calculate_loss(self, interaction):
        return self.forward(interaction, return_loss=True)

    def predict(self, interaction):
        return torch.sigmoid(self.forward(interaction))

    def train(self, mode=True):
        """The frozen LLM stays in eval mode (no dropout) while the trainable parts train."""
        super().train(mode)
        self.llm.eval()
        if getattr(self, "gradient_checkpointing", False):
            self._flag_checkpointed_layers(mode)
        return self

    def _flag_checkpointed_layers(self, flag):
        """transformers checkpoints a decoder layer only while that layer is training: flag the layers
        themselves (their attention, MLP and dropout submodules stay in eval mode)."""
        from transformers.modeling_layers import GradientCheckpointingLayer

        for module in self.llm.modules():
            if isinstance(module, GradientCheckpointingLayer):
                module.training = flag

    def place(self, device):
        """Move the model to ``device``, except, under ``device_map``, the LLM and the per-module LoRA weights
        beside its layers: transformers placed (or offloaded) those layer by layer."""
        from recbole_cora.llm.dynamic_lora import PerSampleLoRA

        if not getattr(self.llm, "hf_device_map", None):
            return self.to(device)
        for child in self.children():
            if child is not self.llm and not isinstance(child, PerSampleLoRA):
                child.to(device)
        return self

    def save_prompt_caches(self):
        """Write every prompt builder's new tokenized prompts to disk (see ``PromptBuilder.save_cache``)."""
        for value in vars(self).values():
            if isinstance(value, PromptBuilder):
                value.save_cache()

    def trainable_state_dict(self):
        """Only what this model learns: the frozen LLM and CF encoder are never saved with it."""
        names = {name for name, p in self.named_parameters() if p.requires_grad}
        return {name: t for name, t in self.state_dict().items() if name in names}
