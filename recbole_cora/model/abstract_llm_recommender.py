"""What every LLM recommender of the package shares, and the head of each task.

* ``LLMRecommender``: the frozen LLM (loading, placement under ``device_map``, gradient checkpointing), the
  per-batch adaptation context (``adapt``: e.g. CoRA's per-sample LoRA), the trainable state, the stages a
  model needs (``required_stages``) and the frozen encoder the pipeline scores beside it (``reference_encoder``);
* ``LabeledLLMRecommender``: the labeled task's head: a Yes/No prompt, the answer logit, BCE;
* ``NextItemLLMRecommender`` (in ``next_item_llm_recommender.py``): the next-item task's head: a vector read from
  the LLM's hidden state, scored against every item's vector.
"""

import contextlib
import hashlib
import json

import torch
from recbole.model.abstract_recommender import AbstractRecommender
from recbole.utils import InputType, ModelType
from torch import nn

from recbole_cora.data.candidates import pair_scores, scores_at
from recbole_cora.data.prompts import PromptBuilder
from recbole_cora.llm import AnswerScorer, execution_device, load_llm
from recbole_cora.llm.scoring import AnswerHeadUpdate
from recbole_cora.model.layers import EncoderResidual


def place_model(model, device):
    """``model`` on ``device``; an LLM recommender keeps its LLM where ``device_map`` put it (``LLMRecommender.place``)."""
    return model.place(device) if isinstance(model, LLMRecommender) else model.to(device)


class LLMRecommender(AbstractRecommender):
    """The frozen LLM and what every LLM model does with it; a task's head is a subclass."""

    input_type = InputType.POINTWISE
    tasks = ()  # the tasks a model runs, its own first (recbole_cora.config.model_tasks)
    # The prompt templates the model fills: option -> (slots it must hold, slots it may hold, slots it must hold exactly
    # once: placeholders whose embedding the model replaces). recbole_cora.checks reads them before anything runs.
    prompt_templates = {}
    # Rows of the train split the LLM side learns from, fixed for the run (RecLoRA's Few2Many); None: all rows.
    train_row_subset = None
    # Between training stages (CoLLM's steps, Laser's stages) the next stage starts from the previous one's best
    # saved model (True) or from its last weights (False).
    stage_starts_from_best = False
    # The model also answers a candidate list in text (``answer_candidates``: RSLLM's greedy answer), scored on test.
    answers_in_text = False
    # Its prompt shows a whole candidate list (``example_prompt(interaction, lists)``: RSLLM), not one row's item.
    prompt_shows_candidates = False
    # It can score as the frozen LLM alone on its plain text prompt (``zero_shot()``: the labeled models), which gives
    # the table its "ZeroShot (frozen LLM)" row.
    zero_shot_scoring = False

    def __init__(self, config, dataset):
        super().__init__()
        self.USER_ID = config["USER_ID_FIELD"]
        self.ITEM_ID = config["ITEM_ID_FIELD"]
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

    # ---------------------------------------------------------------- what the pipeline and trainer ask
    @classmethod
    def option_problems(cls, config):
        """Sentences naming the model's options that cannot work together (``recbole_cora.checks.check_run`` lists
        them with every other problem before anything trains); empty when all is well."""
        return []

    @classmethod
    def plan_lines(cls, config, n_items, steps_per_epoch):
        """Lines the model adds to the run's plan (``recbole_cora.plan``): work beyond the training steps that a
        first run should budget for, e.g. Laser's item-matrix passes. None by default."""
        return []

    @classmethod
    def required_stages(cls, config):
        """Pretraining stages this model reads, ``{kind: config option of its folder}`` (kinds: see
        ``recbole_cora.stages.RUNNERS``); the pipeline runs them before the model is built."""
        return {}

    def reference_encoder(self):
        """The frozen encoder whose own scores the pipeline reports beside this model's (None: none)."""
        return None

    @classmethod
    def stages_of(cls, config):
        """The training stages a model of ``config`` will run (what ``training_stages`` returns once built)."""
        return [None]

    def training_stages(self):
        """The model's training stages, run one after the other with a trainer each ([None]: one plain stage)."""
        return [None]

    def set_stage(self, stage):
        """Switch to training stage ``stage`` (one of ``training_stages()``)."""

    def before_epoch(self, epoch):
        """Called by the trainer before each training epoch."""

    def prompt_lengths(self, interaction):
        """Token counts of the batch's prompts (length bucketing), or None for a model without them."""
        return None

    def prompt_builders(self):
        """The model's prompts, ``{template option: PromptBuilder}`` (the plan prints one prompt of each)."""
        return {value.option: value for value in vars(self).values() if isinstance(value, PromptBuilder)}

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

    def candidate_scores(self, interaction, lists):
        """``task: candidates``: (rows, candidates) scores of each row's candidate list; by default its full ranking's
        scores at the listed items (Laser). A model that scores a list otherwise overrides it."""
        return scores_at(self.full_sort_predict(interaction), lists)

    @contextlib.contextmanager
    def llm_score_alone(self):
        """Within it, a model with ``encoder_residual`` scores by its LLM's score alone (its paper's score): what
        training's validation and learning-curve points measure, since the gate is fitted after training and until
        then the fused score is the encoder's, the same at every epoch. No effect on other models."""
        residual = getattr(self, "residual", None)
        self.residual = None
        try:
            yield
        finally:
            self.residual = residual

    def parameter_groups(self):
        """The trainable parameters as the optimizer's groups; a group with an "lr" trains at that peak learning rate
        (the schedule's shape is the same for every group): each trainable module of ``own_rate_modules`` at its
        rate, the rest at the run's."""
        params = [p for p in self.parameters() if p.requires_grad]
        groups = []
        for module, lr in self.own_rate_modules():
            own = [p for p in module.parameters() if p.requires_grad]
            if own and lr:
                ids = {id(p) for p in own}
                params = [p for p in params if id(p) not in ids]
                groups.append({"params": own, "lr": float(lr)})
        return [{"params": params}, *groups]

    def own_rate_modules(self):
        """(module, peak learning rate) pairs of parts that train at a rate of their own (a falsy rate: the run's)."""
        return []

    def learned_buffers(self):
        """Names of buffers that training fills and the model needs to score (saved with its trainable weights)."""
        return set()

    def trainable_state_dict(self):
        """Only what this model learns: the frozen LLM and CF encoder are never saved with it."""
        names = {name for name, p in self.named_parameters() if p.requires_grad} | self.learned_buffers()
        if getattr(self, "residual", None) is not None:  # the gate fitted on valid (``encoder_residual``)
            names.add("residual.gate")
        return {name: t for name, t in self.state_dict().items() if name in names}


class LabeledLLMRecommender(LLMRecommender):
    """The labeled task's head: a Yes/No prompt per (user, item) row; score = the answer logit at the last
    position (``AnswerScorer``); BCE against the label."""

    type = ModelType.CONTEXT
    tasks = ("labeled",)
    zero_shot_scoring = True
    prompt_templates = {"prompt_template": (("target",), ("history",), ())}

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.LABEL = config["LABEL_FIELD"]
        self.prompts = self.build_prompts(config, dataset)
        self.scorer = AnswerScorer(self.llm, self.tokenizer, config, self.prompts.prompt_end)
        # ``answer_head: trainable``: the answer rows of the output head learn (zero update at the start)
        trainable_head = (config["answer_head"] or "frozen") == "trainable"
        self.answer_head = AnswerHeadUpdate(self.d_model, len(self.scorer.answer_ids)) if trainable_head else None
        self.answer_head_lr = config["answer_head_lr"]
        self.loss = nn.BCEWithLogitsLoss()
        self.in_zero_shot = False
        self.score_batch_size = int(config["eval_batch_size"])

    @contextlib.contextmanager
    def zero_shot(self):
        """Inside the block the model scores as the frozen LLM alone on its plain text prompt (``self.prompts``):
        no per-sample adaptation, peft's LoRA bypassed, no ID tokens. CoLLM's and CoRA's "ICL" row."""
        from recbole_cora.llm.peft_lora import lora_disabled

        previous, self.in_zero_shot = self.in_zero_shot, True
        try:
            with lora_disabled(self.llm):
                yield self
        finally:
            self.in_zero_shot = previous

    def zero_shot_key(self, interaction):
        """What the zero-shot scores of ``interaction``'s rows depend on, as a hash: the LLM (its path, dtype, and a
        checksum of its input embeddings, which differ between checkpoints and random seeds), the answer tokens and
        score, and the token ids of every row's plain prompt. Equal keys mean equal zero-shot scores."""
        embeddings = self.llm.get_input_embeddings().weight
        identity = [str(self.llm.config.name_or_path), str(embeddings.dtype), list(embeddings.shape)]
        if embeddings.device.type != "meta":
            identity.append(float(embeddings.detach().double().sum()))
        prompts = self.prompts.token_ids(*self.prompts.rows(interaction))
        blob = json.dumps([identity, self.scorer.answer_ids, self.scorer.mode, prompts])
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def build_prompts(self, config, dataset):
        """The Yes/No prompt of a row: its history titles and the target's (``prompt_template``)."""
        # the last history_len items (PromptBuilder's default): a labeled dataset's history holds that many, a
        # sequential one (the candidate task) RecBole's whole ID history (MAX_ITEM_LIST_LENGTH)
        return PromptBuilder(config, dataset, self.tokenizer, context_length=self.context_length)

    def prompt_lengths(self, interaction):
        return self.prompts.lengths(*self.prompts.rows(interaction))

    def forward(self, interaction, return_loss=False):
        device = execution_device(self.llm.get_input_embeddings())
        input_ids, attention_mask = self.prompts.batch(interaction, device)
        with contextlib.nullcontext() if self.in_zero_shot else self.adapted(interaction):
            scores = self.scorer(self.llm, input_ids, attention_mask, update=self.head_update())
        if return_loss:  # the loss goes through forward so that a DDP-wrapped model syncs gradients
            return self.loss(scores, interaction[self.LABEL].to(scores.device).float())
        return scores

    def own_rate_modules(self):
        """With ``answer_head: trainable`` and ``answer_head_lr``, the answer head trains at its own peak rate."""
        return [] if self.answer_head is None else [(self.answer_head, self.answer_head_lr)]

    def learned_buffers(self):
        if self.answer_head is None or not self.answer_head.weight.requires_grad:  # CoLLM's step 2: saved by step 1
            return set()
        return {f"answer_head.{name}" for name, _ in self.answer_head.named_buffers()}

    def head_update(self):
        """What is added to the answer logits: the trained answer rows' update, none zero-shot (the frozen LLM)."""
        return None if self.in_zero_shot else self.answer_head

    def calculate_loss(self, interaction):
        return self.forward(interaction, return_loss=True)

    @torch.no_grad()
    def candidate_scores(self, interaction, lists):
        """``task: candidates``: the Yes probability of each row's user and history with each of its candidates as the
        target, (rows, candidates); the pairs go through ``predict`` ``eval_batch_size`` at a time."""
        return pair_scores(self.predict, interaction, lists, self.ITEM_ID, self.score_batch_size)

    def predict(self, interaction):
        """The Yes probability, in float64: a raw Yes logit of +15 (SmolLM2's, zero-shot) is 1 - 3e-7 as a
        probability, which float32 rounds to a handful of values, and the AUC of those ties is not the logit's."""
        return torch.sigmoid(self.forward(interaction).double())


def encoder_residual(config):
    """The ``encoder_residual`` head of a model whose config asks for it (``recbole_cora.model.layers.EncoderResidual``),
    else None."""
    return EncoderResidual() if config["encoder_residual"] else None
