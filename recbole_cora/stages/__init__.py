"""Pretraining stages, run by the pipeline before an LLM model is built: a model declares the stages it needs
(``required_stages``: kind -> config option naming the folder) and only reads their finished folders."""

from recbole_cora.stages.cf import cf_stage_config, run_cf_stage
from recbole_cora.stages.din import din_stage_config, run_din_stage
from recbole_cora.stages.runner import run_recbole_stage, stage_config
from recbole_cora.stages.sequence import run_sequence_stage, sequence_stage_config

RUNNERS = {"cf": run_cf_stage, "din": run_din_stage, "sequence": run_sequence_stage}


def prepare_stages(config, dataset, model_class):
    """Run (or find) every stage ``model_class`` needs for ``config``; each folder goes into its config option.
    A folder the user gave in that option is used as it is."""
    required = model_class.required_stages(config) if hasattr(model_class, "required_stages") else {}
    for kind, option in required.items():
        if not config[option]:
            config[option] = str(RUNNERS[kind](config, dataset))
    return required


__all__ = [
    "RUNNERS", "cf_stage_config", "din_stage_config", "prepare_stages", "run_cf_stage", "run_din_stage",
    "run_recbole_stage", "run_sequence_stage", "sequence_stage_config", "stage_config",
]
