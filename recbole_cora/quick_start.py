"""The pipeline behind ``run_recbole_cora.py``: config, dataset, stages, model, trainer, results (both tasks).

It mirrors ``recbole.quick_start.run_recbole`` without importing ``recbole.quick_start`` (which imports
``ray``, not installable on Python 3.12).
"""

import contextlib
import hashlib
import json
import logging
import os
import time
from logging import getLogger

import torch
from accelerate import PartialState
from pathlib import Path

from recbole.data import data_preparation
from recbole.utils import get_local_time, init_logger, init_seed, set_color

from recbole_cora.checkpoint import find_resume_run, stage_folder
from recbole_cora.checks import check_run
from recbole_cora.compat import make_run_dirs, release_previous_run_logging, silence_recbole_warnings
from recbole_cora.runs import write_run_file
from recbole_cora.io import atomic_path, build_lock, reserve
from recbole_cora.config import Config
from recbole_cora.model.abstract_llm_recommender import LLMRecommender, place_model
from recbole_cora.model.encoders import FrozenCFEncoder
from recbole_cora.plan import describe_plan, describe_prompt
from recbole_cora.results import markdown_table, save_curve, save_results
from recbole_cora.stages import planned_stages, prepare_stages
from recbole_cora.tasks import get_task
from recbole_cora.utils import create_dataset, get_model, get_trainer


def run_recbole_cora(model=None, dataset=None, config_file_list=None, config_dict=None, cmd_args=None, saved=True,
                     callback_fn=None):
    """Train and evaluate one model; returns its valid/test results and where they were saved. ``callback_fn(epoch,
    valid_score)`` is RecBole's: called after each validation (of every stage, in turn; tuning prunes with it)."""
    silence_recbole_warnings()  # RecBole's own deprecation warnings on the current stack (compat.RECBOLE_WARNINGS)
    config = Config(model, dataset, config_file_list, config_dict, cmd_args, check=False)  # its problems: check_run
    # One process per device under `accelerate launch` / torchrun; a single process otherwise.
    state = PartialState(cpu=not torch.cuda.is_available())
    init_seed(config["seed"], config["reproducibility"])
    make_run_dirs(config)  # before init_logger: RecBole's own creation races between processes
    release_previous_run_logging()  # else this run would log into the previous run's file (compat)
    init_logger(config)
    logger = getLogger()
    if not state.is_main_process:
        logger.setLevel(logging.WARNING)
    log_file_only(logger, config)  # 150 lines: the log file keeps them, the console gets one line (below)
    model_class = get_model(config["model"])
    with state.main_process_first():  # the tokenizer of a .gguf comes from its dequantised copy, made once
        check_run(config, model_class)  # every option that can be checked without training: all problems at once

    dataset = create_dataset(config)
    log_file_only(logger, dataset)
    train_data, valid_data, test_data = data_preparation(config, dataset)

    results = {}
    is_llm = issubclass(model_class, LLMRecommender)
    stage_plans = planned_stages(config, dataset, model_class) if is_llm else []
    for line in describe_plan(config, dataset, (train_data, valid_data, test_data), model_class, stage_plans):
        logger.info(line)
    if is_llm:
        with state.main_process_first():  # the main process trains a stage; the others then find it
            required = prepare_stages(config, dataset, model_class)
        if "cf" in required:  # a reused stage is read now, so that a broken one is named before the (slow) LLM loads
            FrozenCFEncoder.from_stage(config["cf_stage_dir"], dataset)
    elif config["resume"]:
        raise ValueError(
            f"--resume continues LLM recommenders (CoRA, TALLRec, CoLLM, Laser, ...); {config['model']} is a RecBole "
            "model: run it again without --resume."
        )

    init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
    # under device_map the LLM stays where transformers put it (offloaded layers cannot even be moved)
    model = place_model(model_class(config, train_data._dataset), config["device"])
    log_file_only(logger, model)
    logger.info(f"resolved config, dataset and model: in {log_file(logger) or 'the log file'}")
    if is_llm:
        with state.main_process_first():  # the candidate task's lists: drawn and saved once, then read by the others
            lists = get_task(config).candidate_lists(config, test_data._dataset)
        for line in describe_prompt(model, test_data._dataset.inter_feat, lists):
            logger.info(line)
    start = time.time()
    stages = model.training_stages() if is_llm else [None]
    resume_run = None
    if config["resume"]:
        resume_run = find_resume_run(config, config["model"])
        logger.info(set_color("resume", "yellow") + f": {resume_run}")
    trained, curve = set(), []
    run_options = {key: config[key] for key in ("learning_rate", "epochs")}
    trainer, base = None, resume_run
    for stage in stages:  # CoLLM and Laser train in two stages; every other model in one
        if stage is not None:
            if trainer is not None and model.stage_starts_from_best and saved:
                trainer.load_best_model()  # the next stage starts from the previous one's best model
            model.set_stage(stage)
            for key, value in run_options.items():  # a stage's own rate and epochs, where given
                config[key] = config[f"stage{stage}_{key}"] or value
            logger.info(set_color(f"{config['model']} stage {stage}", "yellow") + f": at most {config['epochs']} epochs")
        trained |= {name for name, p in model.named_parameters() if p.requires_grad}
        trainer = get_trainer(config["MODEL_TYPE"], config["model"], config)(config, model)
        if is_llm and config["curve_epochs"]:
            trainer.curve_data = test_data
        for key, value in run_options.items():  # the stage's values are the trainer's; the config keeps the run's
            config[key] = value
        if base is None:  # every stage of a run shares the first trainer's name, claimed for this run alone
            base = trainer.saved_model_file
            if saved and is_llm:  # a folder per stage
                base = str(claim(base, stage_folder("", stage), True, state))  # the first stage's folder is free
            elif saved:  # RecBole's .pth file
                stem, ext = os.path.splitext(base)
                base = str(claim(stem, ext, False, state)) + ext
        trainer.saved_model_file = stage_folder(base, stage)
        if resume_run is not None and (trainer.resume_dir / "LATEST").is_file():
            trainer.resume_from(trainer.resume_dir)
        best_valid_score, best_valid_result = trainer.fit(
            train_data, valid_data, saved=saved, show_progress=config["show_progress"], callback_fn=callback_fn
        )
        if is_llm:
            curve += [{"stage": stage or 1, **point} for point in trainer.curve_points()]
    if is_llm and getattr(model, "residual", None) is not None:  # encoder_residual: its gate fitted on valid
        if saved:
            trainer.load_best_model()
        trainer.fit_residual_gate(valid_data, show_progress=config["show_progress"])
        if saved:  # the test pass and --predict load the model with its gate
            trainer.save_best_model()
    train_seconds = time.time() - start
    start = time.time()
    test_result = trainer.evaluate(test_data, load_best_model=saved, show_progress=config["show_progress"])
    test_result["eval_seconds"] = round(time.time() - start, 2)
    test_result["train_seconds"] = round(train_seconds, 2)
    test_result["trainable_parameters"] = sum(p.numel() for n, p in model.named_parameters() if n in trained)
    if getattr(model, "residual", None) is not None:  # the weight the LLM's score earned beside its encoder's
        test_result["residual_gate"] = round(float(model.residual.gate), 4)
    reference = model.reference_encoder() if is_llm else None
    if reference is not None:
        # The frozen encoder's own scores, on exactly the rows (or users) the LLM model was evaluated on.
        name = f"{reference.cf_model} (frozen {reference.role})"
        results[name] = trainer.evaluate_model(reference, test_data)
    if getattr(model, "residual", None) is not None:  # the LLM's score alone (the paper's), on the same rows
        results[f"{config['model']} (LLM score alone)"] = llm_score_alone(trainer, model, test_data)
    if is_llm and config["zero_shot_row"] and model.zero_shot_scoring and not model.in_zero_shot:
        results["ZeroShot (frozen LLM)"] = zero_shot_result(config, trainer, model, test_data, state)
    results[config["model"]] = test_result

    folder = claim(Path(config["results_dir"]) / f"{config['model']}-{config['dataset']}-{get_local_time()}", "", True, state)
    if state.is_main_process:
        save_results(folder, results, config, get_task(config))
        if curve:
            save_curve(folder / "curve.csv", curve)
        if saved and getattr(trainer, "optimizer", None) is not None:  # what recbole_cora.load_run reads back
            write_run_file(folder, trainer.saved_model_file)
    table = markdown_table(results, get_task(config))
    logger.info(set_color("best valid ", "yellow") + f": {best_valid_result}")
    logger.info(set_color("test result", "yellow") + f":\n{table}\n(saved in {folder})")
    return {
        "best_valid_score": best_valid_score,
        "valid_score_bigger": config["valid_metric_bigger"],
        "best_valid_result": best_valid_result,
        "test_result": test_result,
        "results": results,
        "results_dir": str(folder.resolve()),
        "table": table,
        "curve": curve,
    }


def claim(path, tail, folder, state):
    """``path`` (+ ``tail``) claimed for this run by the main process (``io.reserve``: another name if a run started
    in the same second has it), the same name for every process."""
    claimed = str(reserve(path, tail, folder)) if state.is_main_process else None
    if state.num_processes > 1:
        from accelerate.utils import broadcast_object_list

        claimed = broadcast_object_list([claimed])[0]
    return Path(claimed)


def llm_score_alone(trainer, model, test_data):
    """``encoder_residual``'s model scored by its LLM's score alone (what its paper ranks by) on the rows it was
    tested on: beside the encoder's row and the fused one, what each part brings. Greedy answers are not generated
    again (they do not depend on the score)."""
    with model.llm_score_alone():
        return trainer.evaluate_model(model, test_data, answers=False)


def zero_shot_result(config, trainer, model, test_data, state):
    """The frozen LLM's own metrics on the test rows ``model`` was scored on (its plain prompt, nothing adapted: see
    ``LabeledLLMRecommender.zero_shot``). They depend only on the LLM, the answer score, the prompts and the rows'
    labels, so they are kept in ``<cf_checkpoint_dir>/zero-shot/`` under a key of exactly those and computed once for
    every model of a comparison that shows the same prompts."""
    rows = trainer.eval_rows(test_data)
    dataset = test_data._dataset
    lists = get_task(config).list_options(config)
    key = json.dumps([model.zero_shot_key(dataset.inter_feat[torch.as_tensor(rows)]), dataset.fingerprint, rows, *lists])
    key = hashlib.sha256(key.encode()).hexdigest()[:16]
    path = Path(config["cf_checkpoint_dir"]) / "zero-shot" / f"{config['dataset']}-{key}.json"
    if path.is_file():
        getLogger().info(f"zero-shot row: the frozen LLM's scores of these prompts, from {path}")
        return json.loads(path.read_text())
    # Several runs at once: one scores, the others wait and read. Not across the processes of one distributed run
    # (they score together; a lock held by one of them would wait on its own collectives).
    with build_lock(path, "the zero-shot row") if state.num_processes == 1 else contextlib.nullcontext():
        if path.is_file():
            getLogger().info(f"zero-shot row: the frozen LLM's scores of these prompts, from {path} (another run's)")
            return json.loads(path.read_text())
        return _score_zero_shot(config, trainer, model, test_data, state, path)


def _score_zero_shot(config, trainer, model, test_data, state, path):
    logger = getLogger()
    logger.info("zero-shot row: the frozen LLM alone on the same test rows")
    model.eval()
    with model.zero_shot():
        result = trainer.evaluate_model(model, test_data, config["show_progress"])
        result = {k: v if isinstance(v, int) else float(v) for k, v in result.items()}  # row counts stay counts
    if state.is_main_process:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(result, indent=1))
    return result


def log_file_only(logger, message):
    """``message`` into the run's log file(s) only (RecBole's init_logger adds one): not on the console. Nothing
    from a process whose logger is quieter than INFO (the non-main processes of a distributed run)."""
    if not logger.isEnabledFor(logging.INFO):
        return
    record = logger.makeRecord(logger.name, logging.INFO, __file__, 0, str(message), None, None)
    for handler in logger.handlers:
        if isinstance(handler, logging.FileHandler) and record.levelno >= handler.level:
            handler.handle(record)


def log_file(logger):
    files = [h.baseFilename for h in logger.handlers if isinstance(h, logging.FileHandler) and h.baseFilename != os.devnull]
    return files[-1] if files else None
