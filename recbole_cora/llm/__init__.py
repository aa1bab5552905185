"""The LLM side: loading (HF folder, GGUF, tiny random test models), Yes/No scoring, dynamic LoRA."""

from recbole_cora.llm.dynamic_lora import DynamicLoRA, MixtureLoRA
from recbole_cora.llm.loading import execution_device, load_llm, resolve_llm_path
from recbole_cora.llm.scoring import AnswerScorer, answer_token_ids

__all__ = ["AnswerScorer", "DynamicLoRA", "MixtureLoRA", "answer_token_ids", "execution_device", "load_llm", "resolve_llm_path"]
