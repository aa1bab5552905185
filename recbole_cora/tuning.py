"""Hyper-parameter tuning for every model, in RecBole's params-file format (``name kind values`` a line: choice,
uniform, quniform, loguniform), searched by Optuna over one SQLite study per tuning folder.

Each trial is one ``run_recbole_cora`` run with the trial's values on top of the run's options, compared on the
task's ``valid_metric``; only the chosen trial's test result is reported. Several worker processes share the
study; a grid's points are queued once; a trial whose process died (no heartbeat) is queued again. The search
space is read by ``recbole_cora.params_file``. Files and flags: docs/tuning.md.
"""

import ast
import csv
import difflib
import itertools
import json
import multiprocessing
import os
import time
import warnings
from dataclasses import dataclass
from logging import getLogger
from pathlib import Path

import yaml

from recbole_cora.params_file import ParamsFileError, budget_search, grid_size, plain_value, read_params_file

__all__ = ["ParamsFileError", "budget_search", "read_params_file", "tune"]  # the space's parts, where callers find them

HEARTBEAT_SECONDS = 10  # a running trial's process writes its heartbeat this often,
STALE_SECONDS = 30  # and after this long without one the trial is failed and queued again
ALGOS = ("exhaustive", "random", "bayes")


def check_params(params, config_file_list, config_dict, cmd_args, algo):
    """Every problem of ``params`` for this run, before any trial: an option the model does not have, a value the
    run's checks refuse (each choice, each end of a range), an algorithm that cannot search it. Raises
    ``ParamsFileError`` with one sentence each."""
    from recbole_cora.checks import OptionError, check_run
    from recbole_cora.config import Config
    from recbole_cora.utils import get_model

    base = Config(None, None, config_file_list, config_dict, cmd_args, check=False)
    known = set(base.final_config_dict)
    problems = []
    for name in params:
        if name not in known:
            close = difflib.get_close_matches(name, sorted(known), n=1)
            problems.append(f"'{name}' is not an option of {base['model']}" + (f" (did you mean '{close[0]}'?)." if close else "."))
    if algo not in ALGOS:
        problems.append(f"tune_algo '{algo}' is unknown: use one of {', '.join(ALGOS)}.")
    elif algo == "exhaustive":
        ranged = [p.name for p in params.values() if p.kind != "choice"]
        if ranged:
            problems.append(f"tune_algo exhaustive searches a grid of `choice` options; {ranged} are ranges: "
                            "make them choices or use --tune_algo random or bayes.")
    if problems:
        raise ParamsFileError("params file: " + " ".join(problems))
    model_class = get_model(base["model"])
    for param in params.values():
        for value in param.extremes():
            config = Config(None, None, config_file_list, {**(config_dict or {}), param.name: value}, cmd_args, check=False)
            try:
                check_run(config, model_class)
            except OptionError as err:
                problems.append(f"{param.name} {value!r} ({param.kind} {list(param.values)}): {err}")
    if problems:
        raise ParamsFileError("params file: " + " ".join(problems))
    return base


@dataclass
class TuneSpec:
    """What every worker needs to run trials of one study (picklable: workers are separate processes)."""
    folder: str
    params: dict
    config_file_list: list
    config_dict: dict
    cmd_args: list
    algo: str
    trials: int
    seed: int
    direction: str
    prune: bool = False

    @property
    def queued(self):
        """Trials take queued grid points (``queue_grid``): a grid, or random draws from a grid of choices."""
        return self.algo == "exhaustive" or (self.algo == "random" and all(p.kind == "choice" for p in self.params.values()))

    @property
    def storage_url(self):
        return f"sqlite:///{Path(self.folder).resolve() / 'study.db'}"


def open_study(spec):
    """The study of ``spec``'s folder (made on first use). A trial whose process died (no heartbeat for 30 s) is
    marked failed and queued again, at most twice, with the same values."""
    import optuna
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with warnings.catch_warnings():  # the heartbeat is marked experimental; it is what finds a killed trial
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        storage = RDBStorage(spec.storage_url, heartbeat_interval=HEARTBEAT_SECONDS, grace_period=STALE_SECONDS,
                             heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=2))
    if spec.algo in ("exhaustive", "random"):  # a grid's points are queued (``queue_grid``): none is drawn
        sampler = optuna.samplers.RandomSampler(seed=spec.seed)
    else:
        sampler = optuna.samplers.TPESampler(seed=spec.seed)
    # Pruning (--tune_prune): a trial whose valid metric after an evaluation is worse than the median of the
    # earlier trials' at the same evaluation stops there (from the third trial on).
    pruner = optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0) if spec.prune else optuna.pruners.NopPruner()
    return optuna.create_study(study_name="tune", storage=storage, sampler=sampler, pruner=pruner,
                               direction=spec.direction, load_if_exists=True)


def run_trials(spec, worker=0):
    """One worker: run trials of the study until it holds ``spec.trials`` finished ones (or the grid is done)."""
    import optuna
    from optuna.study import MaxTrialsCallback
    from optuna.trial import TrialState

    from recbole_cora.quick_start import run_recbole_cora

    study = open_study(spec)
    # A trial whose process died (the machine, a kill) is failed now and queued again with its values.
    with warnings.catch_warnings():  # marked experimental, like the heartbeat itself
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)

    def objective(trial):
        if spec.queued and not _queued(study, trial):
            # Another worker took the grid's last point between this one's check and its draw: nothing to run.
            trial.set_user_attr("overflow", True)
            study.stop()
            raise optuna.TrialPruned()
        values = {name: param.suggest(trial) for name, param in spec.params.items()}
        options = {**spec.config_dict, **values, "results_dir": str(Path(spec.folder) / "trials" / f"trial-{trial.number}")}
        getLogger().info(f"tuning: trial {trial.number} (worker {worker}): {values}")
        start = time.time()
        trial.set_user_attr("values", json.dumps(values, default=str))
        evaluations = itertools.count()

        def report(epoch, valid_score):  # every evaluation of the run (of all its stages, in turn)
            step = next(evaluations)
            trial.report(float(valid_score), step)
            if trial.should_prune():
                trial.set_user_attr("pruned_at", f"evaluation {step + 1} (epoch {epoch + 1})")
                raise optuna.TrialPruned()

        try:
            out = run_recbole_cora(config_file_list=spec.config_file_list, config_dict=options, cmd_args=spec.cmd_args,
                                   callback_fn=report)
        except optuna.TrialPruned:
            trial.set_user_attr("seconds", round(time.time() - start, 1))
            raise
        except Exception as err:  # the table says why; the other trials still run
            trial.set_user_attr("error", f"{type(err).__name__}: {err}"[:300])
            trial.set_user_attr("seconds", round(time.time() - start, 1))
            raise
        trial.set_user_attr("seconds", round(time.time() - start, 1))
        trial.set_user_attr("valid", json.dumps(out["best_valid_result"], default=float))
        trial.set_user_attr("test", json.dumps(out["test_result"], default=float))
        trial.set_user_attr("results_dir", out["results_dir"])
        trial.set_user_attr("table", out["table"])
        trial.set_user_attr("run_model", next(k for k, v in out["results"].items() if v is out["test_result"]))
        return float(out["best_valid_score"])

    if spec.queued:  # the queued grid points, each run once by whichever worker takes it
        if not study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
            return
        callbacks = [_stop_when_queue_empty]
    else:  # running trials count too, so that several workers stop at the budget together
        callbacks = [MaxTrialsCallback(spec.trials, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL,
                                                             TrialState.RUNNING))]
    study.optimize(objective, callbacks=callbacks, catch=(Exception,))


def _queued(study, trial):
    """Whether ``trial`` took a queued grid point (rather than a fresh draw)."""
    frozen = next(t for t in study.get_trials(deepcopy=False) if t.number == trial.number)
    return "fixed_params" in frozen.system_attrs


def _stop_when_queue_empty(study, trial):
    from optuna.trial import TrialState

    if not study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
        study.stop()


def queue_grid(study, params, trials, seed=None):
    """Queue ``trials`` points of the grid of ``params``, once per study (a resumed study keeps its queue): the
    first ones in the order of the file (the last option varies fastest), or with ``seed`` ``trials`` distinct
    points drawn at random (a random search of choices never runs one point twice)."""
    import itertools
    import random

    if study.trials:
        return
    names = list(params)
    points = list(itertools.product(*(params[n].values for n in names)))
    chosen = random.Random(seed).sample(points, min(trials, len(points))) if seed is not None else points[:trials]
    for values in chosen:
        study.enqueue_trial({n: plain_value(v) for n, v in zip(names, values)})


def _worker_main(spec, worker, gpus):
    if gpus:  # one GPU per worker
        os.environ["CUDA_VISIBLE_DEVICES"] = str(gpus[worker % len(gpus)])
    run_trials(spec, worker)


def tune(params_file, config_file_list=None, config_dict=None, cmd_args=None, folder=None, trials=None,
         algo=None, workers=1, prune=False):
    """Search ``params_file`` for the run of ``config_file_list`` / ``config_dict`` / ``cmd_args``; returns
    ``{"folder", "best", "trials", "table"}`` (see the module's docstring for the files). ``algo`` None: a grid
    when every option is a choice, else bayes; ``trials`` None: the whole grid, or 10."""
    from recbole.utils import get_local_time

    logger = getLogger()
    try:
        import optuna  # noqa: F401
    except ImportError:
        raise ParamsFileError("--params_file needs Optuna: pip install 'recbole-cora[tune]' (or pip install optuna).")
    params = read_params_file(params_file)
    if algo is None:
        algo = "exhaustive" if all(p.kind == "choice" for p in params.values()) else "bayes"
    base = check_params(params, config_file_list, config_dict, cmd_args, algo)
    if trials is None:
        trials = grid_size(params) if algo == "exhaustive" else 10
    if not isinstance(trials, int) or trials < 1:
        raise ParamsFileError(f"tune_trials {trials!r}: give a whole number of at least 1.")
    folder = Path(folder or Path(base["results_dir"]) / f"tune-{base['model']}-{base['dataset']}-{get_local_time()}")
    folder.mkdir(parents=True, exist_ok=True)
    spec = TuneSpec(str(folder), params, list(config_file_list or []), dict(config_dict or {}), list(cmd_args or []),
                    algo, trials, int(base["seed"]), "maximize" if base["valid_metric_bigger"] else "minimize", prune)
    study = open_study(spec)  # made once, before the workers race to make it
    if spec.queued:
        queue_grid(study, params, trials, seed=None if algo == "exhaustive" else spec.seed)
    logger.info(f"tuning {base['model']} on {base['dataset']}: {trials} trials of {list(params)} ({algo}), "
                f"{workers} worker(s), on {base['valid_metric']}; folder {folder}")
    if workers <= 1:
        run_trials(spec)
    else:
        import torch

        gpus = list(range(torch.cuda.device_count()))
        context = multiprocessing.get_context("spawn")
        processes = [context.Process(target=_worker_main, args=(spec, w, gpus)) for w in range(workers)]
        for process in processes:
            process.start()
        for process in processes:
            process.join()
        dead = [w for w, p in enumerate(processes) if p.exitcode != 0]
        if dead:
            logger.warning(f"tuning: worker(s) {dead} stopped with an error; rerun the same command with "
                           f"--tune_dir {folder} to go on")
    return write_tuning(spec, base)


def trial_rows(study, metric):
    from optuna.trial import TrialState

    rows = []
    for trial in sorted(study.trials, key=lambda t: t.number):
        attrs = trial.user_attrs
        if attrs.get("overflow"):  # a draw past a finished grid, ended before it ran
            continue
        rows.append({
            "trial": trial.number, "state": trial.state.name.lower(),
            **{name: value for name, value in json.loads(attrs.get("values", "{}")).items()},
            f"valid {metric}": trial.value if trial.state == TrialState.COMPLETE else None,
            "seconds": attrs.get("seconds"),
            "note": attrs.get("error") or attrs.get("pruned_at") or _retry_note(trial, study),
        })
    return rows


def _retry_note(trial, study):
    from optuna.trial import TrialState

    if trial.state == TrialState.FAIL and "error" not in trial.user_attrs:
        again = [t.number for t in study.trials if t.system_attrs.get("failed_trial") == trial.number]
        return "its process stopped (no heartbeat)" + (f": run again as trial {again[0]}" if again else "")
    if "failed_trial" in trial.system_attrs:
        return f"run again for trial {trial.system_attrs['failed_trial']}"
    return None


def write_tuning(spec, base):
    from optuna.trial import TrialState

    folder = Path(spec.folder)
    study = open_study(spec)
    metric = base["valid_metric"].lower()
    rows = trial_rows(study, metric)
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    if not complete:
        raise RuntimeError(f"tuning: no trial finished; see the trials' logs (folder {folder}).")
    best = study.best_trial
    values = json.loads(best.user_attrs["values"])
    test = json.loads(best.user_attrs["test"])
    columns = ["trial", "state", *spec.params, f"valid {metric}", "seconds"]
    columns += ["note"] if any(row["note"] for row in rows) else []  # why a trial failed, where one was pruned
    with open(folder / "trials.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns + ["chosen"], extrasaction="ignore")
        writer.writeheader()
        writer.writerows({**row, "chosen": row["trial"] == best.number} for row in rows)
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = [_cell(row.get(c)) for c in columns]
        cells[0] = f"**{cells[0]}**" if row["trial"] == best.number else cells[0]
        lines.append("| " + " | ".join(cells) + " |")
    running = [t.number for t in study.trials if t.state == TrialState.RUNNING]
    note = (f"\nTrials {running} are still marked running (a worker died?): rerun the command with --tune_dir "
            f"{folder} to run them again.\n") if running else ""
    test_line = ", ".join(f"{k} {v:.4f}" for k, v in test.items() if isinstance(v, float) and not k.endswith("seconds"))
    text = (f"# Tuning {base['model']} on {base['dataset']}\n\n{len(complete)} of {len(rows)} trials finished "
            f"({spec.algo}); chosen on valid {metric}: trial {best.number}, {values}.\n\n" + "\n".join(lines) + "\n"
            + note + f"\nTest of the chosen trial only: {test_line}.\n")
    (folder / "trials.md").write_text(text)
    rerun = {**_given_options(spec), **values}
    (folder / "best.yaml").write_text(
        f"# The best of {len(complete)} trials (valid {metric} {best.value:.4f}); rerun with --config_files best.yaml\n"
        + yaml.safe_dump(rerun, sort_keys=True))
    (folder / "result.md").write_text(best.user_attrs["table"] + "\n")
    getLogger().info(f"tuning done: trial {best.number} {values}, valid {metric} {best.value:.4f}\n{text}")
    best_run = {"trial": best.number, "values": values, "valid": best.value, "test": test,
                "results_dir": best.user_attrs["results_dir"], "run_model": best.user_attrs.get("run_model")}
    return {"folder": str(folder), "best": best_run, "finished": len(complete),
            "trials": rows, "table": best.user_attrs["table"], "text": text}


def _cell(value):
    if value is None:
        return ""
    return f"{value:.4g}" if isinstance(value, float) and not float(value).is_integer() else str(value)


def _given_options(spec):
    """The run's own options (its YAML files, then config_dict, then --key=value), without the tuning's."""
    from recbole_cora.config import parse_cmd_args

    given = {}
    for path in spec.config_file_list:
        given.update(yaml.safe_load(Path(path).read_text()) or {})
    given.update(spec.config_dict)
    for key, text in parse_cmd_args(spec.cmd_args).items():  # --key=value: read as the Config reads it
        try:
            given[key] = ast.literal_eval(text) if isinstance(text, str) else text
        except (ValueError, SyntaxError):
            given[key] = text
    given.pop("results_dir", None)
    return json.loads(json.dumps(given, default=str))
