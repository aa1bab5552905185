"""The pipeline behind ``run_recbole_cora.py``: config, dataset, CF stage, model, trainer, results.

It mirrors ``recbole.quick_start.run_recbole`` without importing ``recbole.quick_start`` (which imports
``ray``, not installable on Python 3.12).
"""

import logging
import time
from logging import getLogger

import torch
from accelerate import PartialState
from pathlib import Path

from recbole.data import data_preparation
from recbole.utils import get_local_time, init_logger, init_seed, set_color

from recbole_cora.compat import make_run_dirs
from recbole_cora.config import Config
from recbole_cora.evaluator import evaluate_groups
from recbole_cora.results import markdown_table, save_results
from recbole_cora.utils import create_dataset, get_model, get_trainer, place_model


def run_recbole_cora(model=None, dataset=None, config_file_list=None, config_dict=None, cmd_args=None, saved=True):
    """Train and evaluate one model; returns its valid/test results and where they were saved."""
    config = Config(model, dataset, config_file_list, config_dict, cmd_args)
    # One process per device under `accelerate launch` / torchrun; a single process otherwise.
    state = PartialState(cpu=not torch.cuda.is_available())
    init_seed(config["seed"], config["reproducibility"])
    make_run_dirs(config)  # before init_logger: RecBole's own creation races between processes
    init_logger(config)
    logger = getLogger()
    if not state.is_main_process:
        logger.setLevel(logging.WARNING)
    logger.info(config)

    dataset = create_dataset(config)
    logger.info(dataset)
    train_data, valid_data, test_data = data_preparation(config, dataset)

    results = {}
    model_class = get_model(config["model"])
    if hasattr(model_class, "prepare_stage"):  # a model with its own frozen-encoder stage (RecLoRA: DIN or CF)
        with state.main_process_first():
            model_class.prepare_stage(config, dataset)
    elif getattr(model_class, "uses_cf_encoder", False):
        from recbole_cora.model.collaborative import FrozenCFEncoder, run_cf_stage

        with state.main_process_first():  # the main process trains it; the others then find it
            config["cf_stage_dir"] = str(run_cf_stage(config, dataset))
        # a reused stage is read now, so that a broken one is named before the (slow) LLM is loaded
        FrozenCFEncoder.from_stage(config["cf_stage_dir"], dataset)

    init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
    # under device_map the LLM stays where transformers put it (offloaded layers cannot even be moved)
    model = place_model(model_class(config, train_data._dataset), config["device"])
    logger.info(model)
    start = time.time()
    stages = model.training_stages() if hasattr(model, "training_stages") else [None]
    resume_run = None
    if config["resume"]:
        from recbole_cora.checkpoint import find_resume_run
        from recbole_cora.model.abstract_llm_recommender import LLMRecommender

        if not issubclass(model_class, LLMRecommender):
            raise ValueError(
                f"--resume continues LLM recommenders (CoRA, TALLRec, CoLLM, ...); {config['model']} is a RecBole "
                "model: run it again without --resume."
            )

        resume_run = find_resume_run(config, config["model"])
        logger.info(set_color("resume", "yellow") + f": {resume_run}")
    trained = set()
    learning_rate = config["learning_rate"]
    for stage in stages:  # CoLLM trains in two steps; every other model in one
        if stage is not None:
            model.set_stage(stage)
            config["learning_rate"] = config[f"stage{stage}_learning_rate"] or learning_rate
            logger.info(set_color(f"{config['model']} step {stage}", "yellow"))
        trained |= {name for name, p in model.named_parameters() if p.requires_grad}
        trainer = get_trainer(config["MODEL_TYPE"], config["model"], config)(config, model)
        config["learning_rate"] = learning_rate  # the step's rate is the trainer's; the config keeps the run's
        if resume_run is not None:
            trainer.saved_model_file = resume_run
        if stage is not None:
            trainer.saved_model_file = f"{trainer.saved_model_file}-step{stage}"
        if resume_run is not None and hasattr(trainer, "resume_dir") and (trainer.resume_dir / "LATEST").is_file():
            trainer.resume_checkpoint(trainer.resume_dir)
        best_valid_score, best_valid_result = trainer.fit(
            train_data, valid_data, saved=saved, show_progress=config["show_progress"]
        )
    train_seconds = time.time() - start
    start = time.time()
    test_result = trainer.evaluate(test_data, load_best_model=saved, show_progress=config["show_progress"])
    test_result["eval_seconds"] = round(time.time() - start, 2)
    test_result["train_seconds"] = round(train_seconds, 2)
    test_result["trainable_parameters"] = sum(p.numel() for n, p in model.named_parameters() if n in trained)
    cf_encoder = getattr(model, "cf_encoder", None)
    if cf_encoder is not None and hasattr(trainer, "score_rows"):
        # The frozen CF encoder's own scores, on exactly the rows the LLM model was evaluated on.
        struct = trainer.score_rows(cf_encoder, test_data)
        results[f"{cf_encoder.cf_model} (frozen CF encoder)"] = evaluate_groups(trainer.evaluator, struct)
    results[config["model"]] = test_result

    folder = Path(config["results_dir"]) / f"{config['model']}-{config['dataset']}-{get_local_time()}"
    if state.is_main_process:
        save_results(folder, results, config)
    table = markdown_table(results)
    logger.info(set_color("best valid ", "yellow") + f": {best_valid_result}")
    logger.info(set_color("test result", "yellow") + f":\n{table}\n(saved in {folder})")
    return {
        "best_valid_score": best_valid_score,
        "valid_score_bigger": config["valid_metric_bigger"],
        "best_valid_result": best_valid_result,
        "test_result": test_result,
        "results": results,
        "results_dir": str(folder),
        "table": table,
    }
