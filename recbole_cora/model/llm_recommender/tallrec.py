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

from recbole_cora.model.abstract_llm_recommender import LLMRecommender


class TALLRec(LLMRecommender):
    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        from peft import LoraConfig, inject_adapter_in_model

        lora = LoraConfig(
            r=config["lora_rank"], lora_alpha=config["lora_alpha"], lora_dropout=config["lora_dropout"],
            target_modules=list(config["lora_target_modules"]), bias="none",
        )
        self.llm = inject_adapter_in_model(lora, self.llm)  # peft's layers, in place; the base stays frozen
        for name, parameter in self.llm.named_parameters():
            parameter.requires_grad = "lora_" in name

    def train(self, mode=True):
        super().train(mode)  # the LLM itself stays in eval mode ...
        for name, module in self.llm.named_modules():
            if name.endswith("lora_dropout"):  # ... but its LoRA dropout follows the mode
                module.train(mode)
        return self
