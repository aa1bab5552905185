"""One file per LLM-based recommender (CoRA, TALLRec, CoLLM, RecLoRA, Laser, ...). Each module is named after its
class in lower case so that ``recbole_cora.utils.get_model`` finds it."""

__all__ = ["CoLLM", "CoRA", "Laser", "RecLoRA", "RSLLM", "TALLRec", "ZeroShot"]
