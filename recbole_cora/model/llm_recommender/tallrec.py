r"""TALLRec: LoRA-tuning the LLM on a text prompt.

Reference:
    Keqin Bao, Jizhi Zhang, Yang Zhang, Wenjie Wang, Fuli Feng and Xiangnan He. "TALLRec: An Effective
    and Efficient Tuning Framework to Align Large Language Model with Recommendation." RecSys 2023
    (arXiv:2305.00447).

Reference code:
    https://github.com/SAI990323/TALLRec

The same text prompt as CoRA (history titles and the target title, no ID tokens); ordinary LoRA from
peft on q and v (r = 8, alpha = 16, dropout 0.05); only the LoRA weights train; the score is the Yes - No
logit at the last position. Ours by default (``answer_head: trainable``): the answer words' rows of the output head
train too (``recbole_cora.llm.scoring.AnswerHeadUpdate``, 2 x (d + 1) parameters, zero at the start); ``frozen``
is the paper's.

Two losses (``answer_loss``):

* ``bce`` (the default): binary cross-entropy of that score against the label, as CoRA and CoLLM train;
* ``lm`` (the reference code's ``train_on_inputs``): the language-model loss, next-token cross-entropy over the
  whole vocabulary at every position of the prompt followed by the answer word and the end token, averaged over
  the batch's tokens. With ``llm_train_samples`` (the reference code's ``sample``: a fixed few-shot subset drawn
  once), ``gradient_accumulation_steps`` (its batch of 128) and many epochs kept on the best valid AUC, this is
  the reference recipe (``properties/presets/tallrec_reference.yaml``).
"""

from recbole_cora.data.rows import fixed_row_subset
from recbole_cora.llm import execution_device
from recbole_cora.llm.peft_lora import inject_lora, set_lora_dropout_mode
from recbole_cora.model.abstract_llm_recommender import LabeledLLMRecommender


class TALLRec(LabeledLLMRecommender):
    # on the candidate task it trains on the next-item rows (and one sampled negative each) and ranks a list by its
    # Yes probability (``candidate_scores``)
    tasks = ("labeled", "candidates")

    @classmethod
    def option_problems(cls, config):
        problems = super().option_problems(config)
        if config["answer_loss"] == "lm" and config["answer_head"] == "trainable":
            problems.append("answer_loss: lm trains the LLM's own output head through its next-token loss, so "
                            "`answer_head: trainable` would never get a gradient: set `answer_head: frozen` with it "
                            "(as properties/presets/tallrec_reference.yaml does), or `answer_loss: bce`.")
        return problems

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.llm = inject_lora(self.llm, config)
        self.answer_loss = config["answer_loss"] or "bce"
        self.train_row_subset = fixed_row_subset(len(dataset), config["llm_train_samples"], config["seed"])

    def train(self, mode=True):
        super().train(mode)
        set_lora_dropout_mode(self.llm, mode)
        return self

    def forward(self, interaction, return_loss=False):
        if return_loss and self.answer_loss == "lm" and not self.in_zero_shot:
            return self.language_model_loss(interaction)
        return super().forward(interaction, return_loss)

    def answer_sequences(self, interaction):
        """Each row's prompt token ids followed by its answer word's token (the label's: Yes for 1, No for 0) and the
        tokenizer's end token, as (input_ids, attention_mask), right-padded."""
        yes, no = self.scorer.answer_ids
        end = [] if self.tokenizer.eos_token_id is None else [int(self.tokenizer.eos_token_id)]
        labels = interaction[self.LABEL].tolist()
        rows = self.prompts.token_ids(*self.prompts.rows(interaction))
        full = [ids + [yes if label > 0.5 else no] + end for ids, label in zip(rows, labels)]
        return self.prompts.pad(full, execution_device(self.llm.get_input_embeddings()))

    def language_model_loss(self, interaction):
        """``answer_loss: lm``: the causal language-model loss over prompt, answer and end token (padding ignored)."""
        input_ids, attention_mask = self.answer_sequences(interaction)
        targets = input_ids.masked_fill(attention_mask == 0, -100)
        with self.adapted(interaction):
            out = self.llm(input_ids=input_ids, attention_mask=attention_mask, labels=targets, use_cache=False)
        return out.loss
