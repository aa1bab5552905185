"""One runner for every pretraining stage: a RecBole model trained by RecBole on the run's own split, saved
in a folder keyed by the model, the split fingerprint and the options that change what it learns, and found
there again by later runs (or refused when its split differs).

A stage folder holds the trained model as ``recbole_model.safetensors`` + ``recbole_model.json`` (what its reader
loads: weights, and the options that rebuild its Config; ``recbole_files``), RecBole's own ``recbole_model.pth``
beside them (for RecBole's tools; never read back), ``result.json`` (the stage model's own valid/test metrics) and
what the stage's ``save`` writes, last of all its ``done_file``: the stage is complete when that file exists.
"""

import hashlib
import json
from logging import getLogger
from pathlib import Path

from recbole.data import data_preparation
from recbole.utils import init_seed
from recbole.utils.argument_list import dataset_arguments

from recbole_cora.config import Config
from recbole_cora.io import atomic_path, build_lock
from recbole_cora.model.encoders import CFCheckpointError
from recbole_cora.utils import create_dataset, get_model, get_trainer

# Options that change what a stage learns: they key its folder.
KEY_OPTIONS = (
    "embedding_size", "n_layers", "reg_weight", "learning_rate", "epochs", "train_batch_size",
    "learner", "weight_decay", "stopping_step", "seed", "train_neg_sample_args", "require_pow", "valid_metric",
)

# What a stage takes over from the run: the data, the task and the split, never the LLM model's training options
# (an `epochs: 1` meant for CoRA must not cut LightGCN's training short); the stage's own options dict sets those.
SHARED_OPTIONS = set(dataset_arguments) | {
    "gpu_id", "use_gpu", "seed", "reproducibility", "state", "data_path", "checkpoint_dir", "show_progress",
    "eval_args", "repeatable", "metrics", "topk", "valid_metric", "metric_decimal_place", "encoding", "task",
    "task_options", "mask_history", "time_window", "inter_num_filter_passes", "history_tie_order", "WARM_FIELD",
    "cf_checkpoint_dir", "results_dir", "candidate_count", "candidate_seed",
}


def stage_config(config, model, options=None):
    """The RecBole Config of a stage: the run's data, task and split options, ``model``'s own defaults, then
    ``options`` (the stage's own, e.g. ``cf_config``) on top."""
    given = {**config.internal_config_dict, **config.external_config_dict}  # before RecBole rewrites data_path
    shared = {key: value for key, value in given.items() if key in SHARED_OPTIONS}
    shared.update(options or {})
    shared["model"] = model
    return Config(model=model, dataset=config["dataset"], config_dict=shared)


def stage_dir(config, fingerprint, key_options=KEY_OPTIONS):
    values = {key: config[key] for key in key_options if key in config}
    blob = json.dumps([config["model"], fingerprint, values], sort_keys=True, default=str)
    key = hashlib.sha256(blob.encode()).hexdigest()[:12]
    return Path(config["cf_checkpoint_dir"]) / f"{config['dataset']}-{config['model']}-{key}"


def write_stage_meta(stage, name, stage_dataset, fingerprint, **extra):
    """``name`` in the stage folder, written atomically (the stage's done file): what its reader checks, i.e. the
    dataset, the model, the split fingerprint and the user/item tokens in the stage's id order (``read_stage_meta``)."""
    meta = {
        "dataset": stage_dataset.dataset_name,
        "model": stage_dataset.config["model"],
        "split_fingerprint": fingerprint,
        "user_tokens": list(map(str, stage_dataset.field2id_token[stage_dataset.uid_field])),
        "item_tokens": list(map(str, stage_dataset.field2id_token[stage_dataset.iid_field])),
        **extra,
    }
    with atomic_path(Path(stage) / name) as tmp:
        tmp.write_text(json.dumps(meta))


def run_recbole_stage(config, dataset, key_options, done_file, save, what="the train split"):
    """Train a RecBole model for a stage (a frozen encoder of an LLM model), or find it trained already.

    ``save(model, stage_dataset, fingerprint, folder)`` writes what the stage's consumer reads, ``done_file``
    last. ``dataset`` is the caller's dataset: a stage whose split differs from it is refused."""
    logger = getLogger()
    name = config["model"]
    init_seed(config["seed"], config["reproducibility"])
    stage_dataset = create_dataset(config)
    train_data, valid_data, test_data = data_preparation(config, stage_dataset)
    fingerprint = stage_dataset.fingerprint
    if dataset is not None and getattr(dataset, "fingerprint", fingerprint) != fingerprint:
        raise CFCheckpointError(
            f"the {name} stage's split ({fingerprint}) differs from the model's ({dataset.fingerprint}): the "
            "stage must use the same dataset options. Move split/filter options out of the stage's own options "
            "(`cf_config`, `reclora_encoder_config`, `sequential_encoder_config`)."
        )
    stage = stage_dir(config, fingerprint, key_options)
    if (stage / done_file).is_file():
        logger.info(f"{name} stage: reusing {stage}")
        return stage
    with build_lock(stage, f"the {name} stage"):  # several runs at once: one trains it, the others then reuse it
        if (stage / done_file).is_file():
            logger.info(f"{name} stage: reusing {stage} (trained by another run meanwhile)")
            return stage
        _train_stage(config, name, stage, train_data, valid_data, test_data, stage_dataset, fingerprint, save, what)
    return stage


def _train_stage(config, name, stage, train_data, valid_data, test_data, stage_dataset, fingerprint, save, what):
    logger = getLogger()
    stage.mkdir(parents=True, exist_ok=True)
    logger.info(f"{name} stage: training on {what} into {stage} (at most {config['epochs']} epochs)")
    init_seed(config["seed"], config["reproducibility"])
    model = get_model(name)(config, train_data._dataset).to(config["device"])
    trainer = get_trainer(config["MODEL_TYPE"], name, config)(config, model)
    trainer.saved_model_file = str(stage / "recbole_model.pth")
    trainer.checkpoint_dir = str(stage)
    _, valid_result = trainer.fit(train_data, valid_data, show_progress=config["show_progress"])
    test_result = trainer.evaluate(test_data, load_best_model=True, show_progress=config["show_progress"])
    with open(stage / "result.json", "w") as f:
        json.dump({"model": name, "valid": valid_result, "test": test_result}, f, indent=2)
    save(model, stage_dataset, fingerprint, stage)
