"""Rebuilding a saved run from the options it recorded: the same dataset and split (refused when the data's split
fingerprint changed), the same LLM (refused when its weights differ), the stage folders it read, then its trained
parameters. Nothing is unpickled: a RecBole model's run is read from the safetensors + JSON pair beside its ``.pth``
(``recbole_files``), or that ``.pth`` weights-only."""

from pathlib import Path

from recbole.data import data_preparation
from recbole.utils import init_logger, init_seed

from recbole_cora.checks import package_options
from recbole_cora.checkpoint import (PATH_OPTIONS, CheckpointError, config_differences, llm_identity, load_trainable,
                                     plain_config, resolve_dir, split_stage_folder, stage_folder)
from recbole_cora.compat import make_run_dirs, release_previous_run_logging, silence_recbole_warnings
from recbole_cora.config import Config
from recbole_cora.model.abstract_llm_recommender import place_model
from recbole_cora.recbole_files import CorruptCheckpointError, read_recbole_model
from recbole_cora.runs.finding import RunLoadError, check_run_record, find_saved_model, read_saved_config
from recbole_cora.runs.saved_run import SavedRun
from recbole_cora.utils import create_dataset, get_model

# Options a loaded run may change: where and how it runs and evaluates, not what it computes.
FREE_OPTIONS = {"show_progress", "state", "eval_batch_size", "eval_rows", "curve_epochs", "resume", "device_map",
                "llm_max_memory", "llm_offload_dir", "results_dir", "checkpoint_dir", "trust_remote_code"}
STAGE_DIR_OPTIONS = ("cf_stage_dir", "reclora_stage_dir", "sequence_stage_dir")  # the stage folders a run reads

# Options added to the package after runs were first saved, each with the value that rebuilds a run saved before it
# existed (what that version computed). A run's config.json holds every option of the version that trained it, so
# an option it lacks is one of these. Adding an option means adding it here (tests/test_inference.py checks it).
ADDED_OPTIONS = {
    "item_gradient": "none", "center_vectors": False, "item_refresh_steps": None,  # Laser
    "user_token": False,  # RSLLM
    "encoder_residual": False,  # Laser, RSLLM
    "answer_loss": "bce", "answer_head": "frozen", "answer_head_lr": None,  # TALLRec (answer_head: every model)
    "cf_stage_dir": None, "reclora_stage_dir": None,
    "hidden_norm": "none",  # Laser, RSLLM
    "candidate_state": "mean", "user_item_head_size": None, "user_item_head_lr": None, "user_item_layer": None,  # RSLLM
    "vector_layer": None, "item_projection": "shared",  # Laser
}


def load_data_and_model(run, **overrides):
    """RecBole's ``load_data_and_model`` for every model this package trains: ``(config, model, dataset,
    train_data, valid_data, test_data)`` rebuilt from ``run`` (``load_run``)."""
    loaded = load_run(run, **overrides)
    return loaded.config, loaded.model, loaded.dataset, loaded.train_data, loaded.valid_data, loaded.test_data


def load_run(run, **overrides):
    """The run ``run`` names (``runs.finding``), rebuilt: a ``SavedRun``. ``overrides`` may change how it runs
    (``FREE_OPTIONS``)."""
    silence_recbole_warnings()
    wrong = sorted(set(overrides) - FREE_OPTIONS)
    if wrong:
        raise RunLoadError(f"a loaded run can change only {sorted(FREE_OPTIONS)}; not {wrong} (they change the model).")
    kind, path = find_saved_model(run)
    return _load_llm_run(path, overrides) if kind == "llm" else _load_recbole_run(path, overrides)


def _recorded_options(record):
    """The options a run recorded, as they resolved. ``model_options`` is left out: the run's own model's entries
    are already in the record (``Config`` wrote them in, unless a --key=value of the run's command line had the
    same key), so applying them again would overwrite what the command line chose."""
    options = dict(record["options"])
    options.pop("model_options", None)
    return options


def _rebuild_options(record, saved_config):
    """The options that rebuild a run: those it recorded, and where this version's default of one of the
    package's options differs from what the run's config.json says it trained with, that value (a default that
    changed since); an option the run's version did not have takes its ``ADDED_OPTIONS`` value."""
    options = _recorded_options(record)
    today = plain_config(Config(config_dict={**options, "state": "WARNING"}, check=False))
    ours = package_options()
    for key, value in today.items():
        if key in options or key in PATH_OPTIONS or key in FREE_OPTIONS or key == "model_options" or key not in ours:
            continue
        if key not in saved_config:
            if key in ADDED_OPTIONS:
                options[key] = ADDED_OPTIONS[key]
        elif saved_config[key] != value:
            options[key] = saved_config[key]
    return options


def _build(options, overrides):
    if options.get("trust_remote_code") and overrides.get("trust_remote_code") is not True:
        # a saved run's record must not switch on the execution of code shipped with a model folder
        raise RunLoadError(
            f"the run was trained with trust_remote_code: True, which runs Python code from the folder of llm_path "
            f"'{options.get('llm_path')}'. A loaded run does not take that from its files: if you trust that model's "
            "code, say so yourself (load_run(..., trust_remote_code=True), or --trust_remote_code=True).")
    config = Config(config_dict={**options, "state": "WARNING", **overrides}, check=False)
    init_seed(config["seed"], config["reproducibility"])
    make_run_dirs(config)
    release_previous_run_logging()
    init_logger(config)
    dataset = create_dataset(config)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    return config, dataset, (train_data, valid_data, test_data)


def _check_split(dataset, saved_fingerprint, where):
    if saved_fingerprint and dataset.fingerprint != saved_fingerprint:
        raise RunLoadError(
            f"the data of '{where}' changed since the run: its split fingerprint was {saved_fingerprint}, the data "
            f"now gives {dataset.fingerprint}. Restore the data files the run was trained on (or train again)."
        )


def _load_llm_run(folder, overrides):
    saved = read_saved_config(folder)
    record = saved["run"]
    check_run_record(record, folder / "config.json")
    config, dataset, splits = _build(_rebuild_options(record, saved["config"]), overrides)
    ignored = set(PATH_OPTIONS) | FREE_OPTIONS | {"model_options"}  # paths were made absolute; these may change
    ignored |= set(ADDED_OPTIONS) - set(saved["config"])  # options of later versions, set to their ADDED_OPTIONS value
    current = plain_config(config)
    unknown = sorted(key for key in set(current) - set(saved["config"]) - ignored if key in package_options())
    if unknown:
        raise RunLoadError(
            f"'{folder}' was saved by a recbole-cora without the option(s) {unknown}, and this version does not say "
            "which value rebuilds such a run. Use the version that trained it, or train again."
        )
    diff = config_differences(*({k: v for k, v in c.items() if k not in ignored} for c in (saved["config"], current)))
    if diff:
        raise RunLoadError(
            f"'{folder}' rebuilds with other options than it was trained with ({diff}): this recbole-cora's defaults "
            "differ from the one that trained it. Use that version, or train again."
        )
    _check_split(dataset, record.get("split_fingerprint"), folder)
    for option in STAGE_DIR_OPTIONS:
        if config[option] and not Path(config[option]).is_dir():
            raise RunLoadError(f"the stage folder '{config[option]}' ({option}) this run read is gone: it cannot be "
                               "rebuilt without it (restore it, or train the run again).")
    model = get_model(config["model"])(config, splits[0]._dataset)
    identity = llm_identity(model.llm)
    if record.get("llm") and _weights(identity) != _weights(record["llm"]):
        raise RunLoadError(
            f"llm_path '{config['llm_path']}' is not the LLM '{folder}' was trained with (its weights differ: "
            f"{record['llm']} then, {identity} now). Point llm_path at that model."
        )
    try:
        _load_stages(model, folder)
    except CheckpointError as err:
        raise RunLoadError(str(err)) from err
    model = place_model(model, config["device"])
    model.eval()
    return SavedRun(config, model, dataset, splits, folder, "llm")


def _load_stages(model, folder):
    """The trained parameters of ``folder`` into ``model``. A multi-stage model (CoLLM, Laser) saved each stage in
    its own folder with what that stage trained (CoLLM's step 2: the mapping only): every stage up to the one
    ``folder`` is of is loaded in turn."""
    stages = model.training_stages()
    base, last = split_stage_folder(folder)
    if stages == [None] or last is None:
        load_trainable(model, folder)
        return
    for stage in stages:
        if int(stage) > int(last):
            break
        model.set_stage(stage)
        part = resolve_dir(stage_folder(base, stage))
        if part.is_dir():
            load_trainable(model, part)


def _load_recbole_run(path, overrides):
    try:
        checkpoint = read_recbole_model(path)  # its safetensors + JSON pair, or weights-only: nothing unpickled
    except CorruptCheckpointError as err:
        raise RunLoadError(str(err)) from err
    record = checkpoint.get("run")
    if record is None:
        raise RunLoadError(
            f"'{path}' was saved by RecBole or an older recbole-cora, which did not record the options and split it "
            "was trained on: it cannot be rebuilt safely. Train it again with this package."
        )
    check_run_record(record, checkpoint["source"])
    config, dataset, splits = _build(_recorded_options(record), overrides)
    _check_split(dataset, record.get("split_fingerprint"), path)
    model = get_model(config["model"])(config, splits[0]._dataset).to(config["device"])
    try:
        model.load_state_dict(checkpoint["state_dict"])
    except RuntimeError as err:
        raise RunLoadError(f"'{checkpoint['source']}' does not fit {config['model']} as its options build it "
                           f"({' '.join(str(err).split())[:300]}): it was edited, or saved with other options.") from err
    model.load_other_parameter(checkpoint.get("other_parameter"))
    model.eval()
    return SavedRun(config, model, dataset, splits, path, "recbole")


def _weights(identity):
    return {key: value for key, value in identity.items() if key != "name_or_path"}  # the folder may have moved
