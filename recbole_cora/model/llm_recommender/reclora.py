r"""RecLoRA: personalised low-rank adaptation, mixed per user from a bank of meta-LoRAs.

Reference:
    Jiachen Zhu, Jianghao Lin, Xinyi Dai, Bo Chen, Rong Shan, Jieming Zhu, Ruiming Tang, Yong Yu and
    Weinan Zhang. "Lifelong Personalized Low-Rank Adaptation of Large Language Models for Recommendation."
    arXiv:2408.03533, 2024.

Reference code:
    https://github.com/Gebro13/RecLoRA

A frozen conventional recommender (RecBole's DIN trained on the full labeled train split, or the CF stage's
user embedding) reads the user's long ID history and gives a representation u per sample. For every target
module m (q_proj and v_proj of every layer) a gate mixes N meta-LoRAs: alpha = softmax(gate_m(u) / tau),
A_p = sum_k alpha_k A_k, B_p = sum_k alpha_k B_k, and the frozen LLM computes W_m x + (alpha/r) x A_p B_p.
Long-short modality retriever: the recommender reads the last ``history_len`` positives as ids, the LLM
only the ``prompt_history_len`` most recent as titles. Few2Many: the recommender learns from every
training row, the LLM side from a fixed uniform subset of ``llm_train_samples`` rows
(``train_row_subset``). Trained: the gates and the meta-LoRA banks; the LLM and the recommender are frozen.
"""

import torch

from recbole_cora.data import NextItemDataset
from recbole_cora.data.prompts import PromptBuilder
from recbole_cora.data.rows import fixed_row_subset
from recbole_cora.llm import MixtureLoRA
from recbole_cora.model.abstract_llm_recommender import LabeledLLMRecommender
from recbole_cora.model.encoders import FrozenCFEncoder, FrozenDINEncoder
from recbole_cora.model.layers import MetaLoRAGates

ENCODERS = ("DIN", "cf")


class RecLoRA(LabeledLLMRecommender):
    tasks = ("labeled", "candidates")  # on the candidate task: the next-item rows, its DIN stage trained on their split

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.encoder_kind = config["reclora_encoder"]
        option = next(iter(self.required_stages(config).values()))
        if not config[option]:
            raise ValueError(f"RecLoRA reads its frozen recommender from `{option}`: run its stage first (the pipeline does).")
        if self.encoder_kind == "cf":
            self.cf_encoder = FrozenCFEncoder.from_stage(config["cf_stage_dir"], dataset)
        else:
            self.cf_encoder = FrozenDINEncoder.from_stage(config["reclora_stage_dir"], dataset, config["device"])
        self.lora = MixtureLoRA(
            self.llm, config["lora_target_modules"], config["lora_rank"], config["lora_alpha"], config["lora_dropout"],
            num_loras=config["num_meta_loras"],
        )
        self.gates = MetaLoRAGates(
            self.lora.keys, self.cf_encoder.embedding_size, config["num_meta_loras"], config["gate_hidden_size"],
            config["gate_temperature"], config["gate_dropout"],
        )
        # Few2Many: the fixed sample of training rows the LLM side learns from
        self.train_row_subset = fixed_row_subset(len(dataset), config["llm_train_samples"], config["seed"])

    def build_prompts(self, config, dataset):
        """The short history: the LLM sees the ``prompt_history_len`` most recent of the long history's items."""
        # the long history: a labeled dataset's `history_len` items, a sequential one's (the candidate task) RecBole's
        # ID history of MAX_ITEM_LIST_LENGTH
        option = "MAX_ITEM_LIST_LENGTH" if isinstance(dataset, NextItemDataset) else "history_len"
        long = int(config[option]) if option == "MAX_ITEM_LIST_LENGTH" else dataset.history_len
        shown = int(config["prompt_history_len"] or long)
        if not 0 < shown <= long:
            raise ValueError(
                f"prompt_history_len {shown} must be between 1 and {option} {long} (the long history the "
                "recommender reads; the LLM sees its most recent prompt_history_len titles)."
            )
        return PromptBuilder(config, dataset, self.tokenizer, context_length=self.context_length, shown=shown)

    @classmethod
    def required_stages(cls, config):
        """DIN's stage (``reclora_stage_dir``) or the CF stage (``cf_stage_dir``)."""
        kind = config["reclora_encoder"]
        if kind not in ENCODERS:
            raise ValueError(f"reclora_encoder {kind!r}: use one of {list(ENCODERS)}.")
        return {"cf": "cf_stage_dir"} if kind == "cf" else {"din": "reclora_stage_dir"}

    def reference_encoder(self):
        return self.cf_encoder

    def user_representation(self, interaction):
        """u: the frozen recommender's representation of each sample (DIN: its final hidden state)."""
        device = next(self.cf_encoder.buffers()).device
        with torch.no_grad():
            if self.encoder_kind == "cf":
                return self.cf_encoder(interaction[self.USER_ID].to(device), interaction[self.ITEM_ID].to(device))[0]
            return self.cf_encoder(interaction)

    def mixture(self, interaction):
        """alpha for each sample, module and meta-LoRA: (batch, modules, N)."""
        return self.gates(self.user_representation(interaction).float())

    def adapt(self, interaction):
        return self.lora.weights(self.mixture(interaction))

    def train(self, mode=True):
        super().train(mode)
        self.cf_encoder.eval()  # the frozen recommender: no dropout, batch norm on its running statistics
        return self
