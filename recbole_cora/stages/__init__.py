"""Pretraining stages, run by the pipeline before an LLM model is built: a model declares the stages it needs
(``required_stages``: kind -> config option naming the folder) and only reads their finished folders."""

from recbole_cora.stages.cf import CF_KEY_OPTIONS, cf_stage_config, run_cf_stage
from recbole_cora.stages.din import DIN_KEY_OPTIONS, din_stage_config, run_din_stage
from recbole_cora.stages.runner import run_recbole_stage, stage_config, stage_dir
from recbole_cora.stages.sequence import SEQUENCE_KEY_OPTIONS, run_sequence_stage, sequence_stage_config
from recbole_cora.model.abstract_llm_recommender import LLMRecommender
from recbole_cora.model.encoders import CF_STAGE_FILE, DIN_STAGE_FILE, SEQUENCE_STAGE_FILE

RUNNERS = {"cf": run_cf_stage, "din": run_din_stage, "sequence": run_sequence_stage}
# kind -> (its Config, the options keying its folder, the file that marks it done, what it is, the option of its budget)
SPECS = {
    "cf": (cf_stage_config, CF_KEY_OPTIONS, CF_STAGE_FILE, "CF encoder", "cf_config"),
    "din": (din_stage_config, DIN_KEY_OPTIONS, DIN_STAGE_FILE, "conventional recommender", "reclora_encoder_config"),
    "sequence": (sequence_stage_config, SEQUENCE_KEY_OPTIONS, SEQUENCE_STAGE_FILE, "sequential encoder",
                 "sequential_encoder_config"),
}


def required_stages(config, model_class):
    """``{kind: folder option}`` of the stages ``model_class`` reads (an LLM model's ``required_stages``); a RecBole
    model reads none."""
    return model_class.required_stages(config) if issubclass(model_class, LLMRecommender) else {}


def planned_stages(config, dataset, model_class):
    """What ``prepare_stages`` will do, found without training: one dict per stage the model needs, with its model,
    folder, whether it is reused (``done``) or given, and the budget it trains under (epochs, early stopping)."""
    required = required_stages(config, model_class)
    plans = []
    for kind, option in required.items():
        make_config, key_options, done_file, role, budget_option = SPECS[kind]
        if config[option]:
            plans.append({"kind": kind, "role": role, "folder": config[option], "given": option})
            continue
        stage = make_config(config)
        folder = stage_dir(stage, dataset.fingerprint, key_options)
        plans.append({
            "kind": kind, "role": role, "model": stage["model"], "folder": str(folder),
            "done": (folder / done_file).is_file(), "epochs": stage["epochs"], "stopping_step": stage["stopping_step"],
            "valid_metric": stage["valid_metric"], "eval_step": stage["eval_step"], "budget_option": budget_option,
        })
    return plans


def prepare_stages(config, dataset, model_class):
    """Run (or find) every stage ``model_class`` needs for ``config``; each folder goes into its config option.
    A folder the user gave in that option is used as it is."""
    required = required_stages(config, model_class)
    for kind, option in required.items():
        if not config[option]:
            config[option] = str(RUNNERS[kind](config, dataset))
    return required


__all__ = [
    "RUNNERS", "SPECS", "cf_stage_config", "planned_stages", "din_stage_config", "prepare_stages", "run_cf_stage", "run_din_stage",
    "run_recbole_stage", "run_sequence_stage", "sequence_stage_config", "stage_config",
]
