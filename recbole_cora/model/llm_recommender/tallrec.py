r"""TALLRec: LoRA-tuning the LLM on a text prompt.

Reference:
    Keqin Bao, Jizhi Zhang, Yang Zhang, Wenjie Wang, Fuli Feng and Xiangnan He. "TALLRec: An Effective
    and Efficient Tuning Framework to Align Large Language Model with Recommendation." RecSys 2023.

Reference code:
    https://github.com/SAI990323/TALLRec

The same text prompt as CoRA (history titles and the target title, no ID tokens); ordinary LoRA from
peft on q and v (r = 8, alpha = 16, dropout 0.05); only the LoRA weights train; the score is the "Yes"
logit at the last position, trained with BCE.
"""

from recbole_cora.llm.peft_lora import inject_lora, set_lora_dropout_mode
from recbole_cora.model.abstract_llm_recommender import LabeledLLMRecommender


class TALLRec(LabeledLLMRecommender):
    # on the candidate task it trains on the next-item rows (and one sampled negative each) and ranks a list by its
    # Yes probability (``candidate_scores``)
    tasks = ("labeled", "candidates")

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.llm = inject_lora(self.llm, config)

    def train(self, mode=True):
        super().train(mode)
        set_lora_dropout_mode(self.llm, mode)
        return self
