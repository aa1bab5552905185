r"""CoLLM: collaborative embeddings mapped into the LLM's input space.

Reference:
    Yang Zhang, Fuli Feng, Jizhi Zhang, Keqin Bao, Qifan Wang and Xiangnan He. "CoLLM: Integrating
    Collaborative Embeddings into Large Language Models for Recommendation." TKDE 2025 (arXiv:2310.19488).

Reference code:
    https://github.com/zyang1580/CoLLM

The prompt carries one placeholder token for the user and one for the target item; a small MLP maps
the frozen CF encoder's embedding of each into the LLM's embedding width, and the mapped vector replaces
the placeholder's input embedding. Training has two steps (``collm_stage``): step 1 tunes LoRA on the
text prompt alone (TALLRec); step 2 freezes that LoRA and trains only the mapping. ``collm_stage: both``
runs them one after the other; ``collm_stage: 2`` with ``collm_stage1_dir`` starts from a saved step 1.
"""

from torch import nn

from recbole_cora.checkpoint import load_trainable
from recbole_cora.data.prompts import PromptBuilder
from recbole_cora.llm.loading import execution_device
from recbole_cora.llm.peft_lora import inject_lora, is_lora, set_lora_dropout_mode
from recbole_cora.llm.scoring import AnswerScorer
from recbole_cora.model.abstract_llm_recommender import LabeledLLMRecommender
from recbole_cora.model.encoders import CFInputNorm, FrozenCFEncoder

SLOTS = ("user_emb", "item_emb")


class CoLLM(LabeledLLMRecommender):
    tasks = ("labeled", "candidates")  # on the candidate task: the next-item rows, a CF stage trained on their split
    # Step 2 starts from step 1's best LoRA (the saved step-1 folder), as `collm_stage: 2` with `collm_stage1_dir` does
    # and CoLLM's code does (it loads a step-1 checkpoint); a loaded run rebuilds exactly that (recbole_cora.runs).
    stage_starts_from_best = True
    prompt_templates = {**LabeledLLMRecommender.prompt_templates, "collm_prompt_template": (("target",), ("history",), SLOTS)}

    @classmethod
    def required_stages(cls, config):
        return {"cf": "cf_stage_dir"}

    def __init__(self, config, dataset):
        super().__init__(config, dataset)  # self.prompts: the text-only prompt of step 1
        self.cf_encoder = FrozenCFEncoder.from_stage(config["cf_stage_dir"], dataset)
        self.cf_input_norm = CFInputNorm(self.cf_encoder, config["cf_input_norm"])
        self.llm = inject_lora(self.llm, config)
        self.cf_prompts = PromptBuilder(
            config, dataset, self.tokenizer, option="collm_prompt_template", slots=SLOTS, context_length=self.context_length
        )
        self.cf_scorer = AnswerScorer(self.llm, self.tokenizer, config, self.cf_prompts.prompt_end)
        hidden = config["mapping_hidden_size"] or self.d_model
        self.mapping = nn.Sequential(
            nn.Linear(self.cf_encoder.embedding_size, hidden), nn.ReLU(), nn.Linear(hidden, self.d_model)
        )
        self.stages = self.stages_of(config)
        if self.stages is None:
            raise ValueError(f"collm_stage {config['collm_stage']!r}: use 1, 2 or both.")
        self.set_stage(1)
        if self.stages == [2]:  # step 2 alone starts from a saved step 1 (its LoRA weights)
            if not config["collm_stage1_dir"]:
                raise ValueError("collm_stage: 2 needs `collm_stage1_dir`: the saved run folder of a step 1.")
            load_trainable(self, config["collm_stage1_dir"])

    def reference_encoder(self):
        return self.cf_encoder

    @classmethod
    def stages_of(cls, config):
        return {"both": [1, 2], 1: [1], 2: [2], "1": [1], "2": [2]}.get(config["collm_stage"])

    def training_stages(self):
        return list(self.stages)

    def set_stage(self, stage):
        """Step 1: LoRA (and a trainable answer head) trains on the text prompt. Step 2: they are frozen, the mapping
        trains, CF prompt."""
        if stage not in (1, 2):
            raise ValueError(f"collm_stage {stage}: use 1, 2 or both.")
        self.stage = stage
        for name, parameter in self.llm.named_parameters():
            parameter.requires_grad = stage == 1 and is_lora(name)
        for parameter in self.mapping.parameters():
            parameter.requires_grad = stage == 2
        if self.answer_head is not None:  # ``answer_head: trainable`` learns with the LoRA of step 1
            self.answer_head.requires_grad_(stage == 1)

    def input_embeddings(self, interaction, input_ids, attention_mask):
        """The prompt's token embeddings with the mapped CF vectors at the placeholder positions."""
        embeds = self.llm.get_input_embeddings()(input_ids)
        device = self.cf_encoder.user_table.device
        user, item = self.cf_input_norm(*self.cf_encoder(interaction[self.USER_ID].to(device), interaction[self.ITEM_ID].to(device)))
        mapped = {"user_emb": self.mapping(user), "item_emb": self.mapping(item)}
        marks = (input_ids == self.cf_prompts.placeholder_id) & (attention_mask == 1)  # the pad id may be it too
        rows, cols = marks.nonzero(as_tuple=True)
        if len(rows) != len(SLOTS) * input_ids.shape[0]:
            raise ValueError("each CoLLM prompt must hold exactly one user and one item placeholder token.")
        embeds = embeds.clone()
        for k, slot in enumerate(self.cf_prompts.slot_order):  # the k-th placeholder of each row
            embeds[rows[k:: len(SLOTS)], cols[k:: len(SLOTS)]] = mapped[slot].to(device=embeds.device, dtype=embeds.dtype)
        return embeds

    def forward(self, interaction, return_loss=False):
        if self.stage == 1 or self.in_zero_shot:  # the text prompt (zero-shot: with its LoRA bypassed)
            return super().forward(interaction, return_loss)
        device = execution_device(self.llm.get_input_embeddings())
        input_ids, attention_mask = self.cf_prompts.batch(interaction, device)
        embeds = self.input_embeddings(interaction, input_ids, attention_mask)
        scores = self.cf_scorer(self.llm, None, attention_mask, inputs_embeds=embeds, update=self.head_update())
        if return_loss:
            return self.loss(scores, interaction[self.LABEL].to(scores.device).float())
        return scores

    def train(self, mode=True):
        super().train(mode)
        set_lora_dropout_mode(self.llm, mode)
        return self
