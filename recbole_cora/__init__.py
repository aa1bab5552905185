"""recbole-cora: LLM-based recommendation with collaborative information, as a RecBole plugin."""

from recbole_cora.evaluator import register_metrics

register_metrics()

from recbole_cora.quick_start import run_recbole_cora  # noqa: E402
from recbole_cora.inference import load_data_and_model, load_run  # noqa: E402

__all__ = ["load_data_and_model", "load_run", "run_recbole_cora"]
__version__ = "0.1.0"
