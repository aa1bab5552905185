r"""ZeroShot: the frozen LLM on the plain text prompt, with nothing trained (the "ICL" row of CoLLM and CoRA).

Reference:
    The in-context-learning baseline of Zhang et al., "CoLLM" (arXiv:2310.19488) and Liu et al., "CoRA"
    (arXiv:2408.10645): the LLM answers the recommendation question from the prompt alone.

The prompt is CoRA's and TALLRec's (``prompt_template``: the history titles and the target title), the score the
answer logit (``answer_score``). No parameter trains: the run evaluates valid and test once. Every labeled LLM model
also reports this row beside its own (``zero_shot_row``), computed once per set of prompts and reused
(``recbole_cora.quick_start``).
"""

from recbole_cora.model.abstract_llm_recommender import LabeledLLMRecommender


class ZeroShot(LabeledLLMRecommender):
    # on the candidate task it trains on the next-item rows (and one sampled negative each) and ranks a list by its
    # Yes probability (``candidate_scores``)
    tasks = ("labeled", "candidates")

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.in_zero_shot = True
