r"""CoRA: Collaborative LoRA.

Reference:
    Yuting Liu, Jinghao Zhang, Yizhou Dang, Yuliang Liang, Qiang Liu, Guibing Guo, Jianzhe Zhao and
    Xingwei Wang. "CoRA: Collaborative Information Perception by Large Language Model's Weights for
    Recommendation." arXiv:2408.10645, 2024.

Reference code:
    https://github.com/VanillaCreamer/CoRA

A frozen CF encoder (LightGCN trained by RecBole) embeds the user and the item; the collaborative query
generator turns [e_u; e_i] into A_b; every target linear layer m of the frozen LLM computes
h = W_m x + (alpha/r) P_m(x A_b) for that one sample. The LLM reads a plain text prompt and answers
Yes/No; nothing of it is fine-tuned and no token is added to the prompt.
"""

from recbole_cora.llm import DynamicLoRA
from recbole_cora.model.abstract_llm_recommender import LabeledLLMRecommender
from recbole_cora.model.encoders import CFInputNorm, FrozenCFEncoder
from recbole_cora.model.layers import CollaborativeQueryGenerator


class CoRA(LabeledLLMRecommender):
    tasks = ("labeled", "candidates")  # on the candidate task: the next-item rows, a CF stage trained on their split
    @classmethod
    def required_stages(cls, config):
        return {"cf": "cf_stage_dir"}

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.cf_encoder = FrozenCFEncoder.from_stage(config["cf_stage_dir"], dataset)
        self.lora = DynamicLoRA(
            self.llm, config["lora_target_modules"], config["lora_rank"], config["lora_alpha"], config["lora_dropout"]
        )
        self.query_generator = CollaborativeQueryGenerator(
            cf_dim=2 * self.cf_encoder.embedding_size, d_model=self.lora.in_features, rank=config["lora_rank"],
            num_queries=config["num_queries"], width=config["query_width"], layers=config["query_layers"],
            heads=config["query_heads"], dropout=config["query_dropout"],
        )

        self.cf_input_norm = CFInputNorm(self.cf_encoder, config["cf_input_norm"])

    def reference_encoder(self):
        return self.cf_encoder

    def cf_input(self, interaction):
        """(e_u, e_i) as the query generator reads them: the frozen CF embeddings, standardised by default
        (``cf_input_norm``; raw, the query generator's A_b of any two pairs was about 0.9998 alike on the embedded
        default: nearly the same delta for everyone)."""
        device = self.query_generator.queries.device
        user, item = self.cf_encoder(interaction[self.USER_ID].to(device), interaction[self.ITEM_ID].to(device))
        return self.cf_input_norm(user, item)

    def lora_factors(self, interaction):
        """A_b for each (user, item) of the batch: (batch, d_model, r)."""
        return self.query_generator(*self.cf_input(interaction))

    def adapt(self, interaction):
        return self.lora.weights(self.lora_factors(interaction))
