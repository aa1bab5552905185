"""RecBole's ``Config`` with the plugin's properties and model lookup (the RecBole-GNN pattern).

Order of precedence, lowest first: RecBole's own defaults; ``properties/overall.yaml``;
``properties/model/<Model>.yaml``; the task's protocol ``properties/task/<task>.yaml``;
``dataset_configs/<dataset>.yaml``, then its ``task_options[<task>]``; the user's YAML files (and their
``task_options[<task>]``); the ``config_dict``; ``--key=value`` arguments. ``eval_args`` is merged key by key
through these layers, so a user who sets only ``eval_args: {split: ...}`` keeps the task's order and mode.
"""

import os
from pathlib import Path

from recbole.config import Config as RecBoleConfig
from recbole.utils import ModelType

from recbole_cora.model.lookup import ALIASES, get_model
from recbole_cora.tasks import get_task, task_names

ROOT = Path(__file__).resolve().parent.parent
PROPERTIES_DIR = ROOT / "properties"
DATASET_CONFIGS_DIR = ROOT / "dataset_configs"
TASKS_DIR = PROPERTIES_DIR / "task"


class OptionError(ValueError):
    """Problems found in the options before anything ran; ``problems`` holds one sentence each."""

    def __init__(self, problems):
        self.problems = list(problems)
        if len(self.problems) == 1:
            message = self.problems[0]
        else:
            lines = "\n".join(f"  {k}. {problem}" for k, problem in enumerate(self.problems, 1))
            message = f"{len(self.problems)} problems in the options (nothing has run yet):\n{lines}"
        super().__init__(message)


def model_tasks(model_class):
    """The tasks a model can run, its own task first: a plugin model says (``tasks``); a RecBole model's follow
    from its type (sequential models rank the next item, context-aware models and DIN/DIEN score labeled rows,
    general models do both)."""
    tasks = getattr(model_class, "tasks", None)
    if tasks:
        return tuple(tasks)
    if model_class.__name__ in ("DIN", "DIEN"):  # sequential CTR models; on the candidate task they score each
        return ("labeled", "candidates")          # (user, history, candidate) row of a list
    if model_class.type == ModelType.SEQUENTIAL:  # next-item models; on the labeled task they learn the next positive
        return ("next_item", "labeled", "candidates")  # item of the train rows and score each labeled row (CoLLM's
                                                      # SASRec); on the candidate task they rank each user's list
    if model_class.type in (ModelType.CONTEXT, ModelType.DECISIONTREE):
        return ("labeled",)
    return ("labeled", "next_item", "candidates")  # general models; on the candidate task they rank each user's list


# Options with a fixed set of values, checked here once for every model (a typo would otherwise do nothing, or
# fail late); what each value does is in properties/overall.yaml or the model's YAML.
CHOICES = {
    "length_bucketing": ("none", "eval", "train_and_eval"),
    "answer_score": ("yes_logit", "yes_minus_no"),
    "answer_head": ("frozen", "trainable"),
    "history_tie_order": ("file", "item_first_seen", "exclude"),
    "llm_dtype": ("float32", "bfloat16", "float16"),
    "llm_init": ("pretrained", "random"),
    "mixed_precision": ("no", "bf16", "fp16"),
    "collm_stage": ("1", "2", "both"),
    "reclora_encoder": ("DIN", "cf"),
    "cf_input_norm": ("none", "standardize"),
    "candidate_score": ("sum", "mean", "user_item"),
    "item_gradient": ("none", "batch"),
    "item_projection": ("shared", "separate"),
    "hidden_norm": ("none", "standardize"),
    "candidate_state": ("mean", "last"),
    "answer_loss": ("bce", "lm"),
}


def check_choices(values):
    """A sentence naming every option in ``values`` whose value is not one of its CHOICES (empty: all fine)."""
    wrong = [
        f"{key} {values[key]!r} (use one of {', '.join(allowed)})"
        for key, allowed in CHOICES.items()
        if values.get(key) is not None and str(values[key]) not in allowed
    ]
    return "; ".join(wrong)


def _merge_eval_args(base, top):
    """``top``'s eval_args over ``base``'s, key by key (RecBole replaces the whole dict)."""
    if not isinstance(base, dict) or not isinstance(top, dict):
        return top if top is not None else base
    return {**base, **top}


def parse_cmd_args(args):
    """``--key=value`` pairs, as RecBole reads them from ``sys.argv``, from an explicit list; ``--key value`` (two
    arguments, the value not starting with ``--``) is read the same way."""
    parsed = {}
    args = list(args or [])
    pairs = []
    while args:
        arg = args.pop(0)
        if arg.startswith("--") and "=" not in arg and len(arg) > 2 and args and not args[0].startswith("--"):
            arg = f"{arg}={args.pop(0)}"
        pairs.append(arg)
    for arg in pairs:
        if not arg.startswith("--") or "=" not in arg:
            raise ValueError(
                f"unrecognised argument '{arg}': options are written --key=value or --key value (e.g. --epochs=5)."
            )
        key, value = arg[2:].split("=", 1)
        if key in parsed and parsed[key] != value:
            raise ValueError(f"option --{key} is given twice with different values.")
        parsed[key] = value
    return parsed


class Config(RecBoleConfig):
    """RecBole's Config for plugin and RecBole models alike.

    Unlike RecBole's, it never reads ``sys.argv`` by itself (a test runner's flags would leak in):
    pass ``cmd_args`` (a list of ``--key=value`` strings) explicitly; ``run_recbole_cora.py`` does.

    A model on a task it does not run and values outside an option's CHOICES are refused at the end of the
    constructor, all at once; with ``check=False`` they are kept in ``problems`` instead, for the pipeline's
    up-front check of every option (``recbole_cora.checks.check_run``), which lists them with all the others.
    """

    def __init__(self, model=None, dataset=None, config_file_list=None, config_dict=None, cmd_args=None, check=True):
        self._cmd_args = list(cmd_args or [])
        self.problems = []
        for path in config_file_list or []:
            if not os.path.isfile(path):
                raise FileNotFoundError(f"config file '{path}' (from --config_files) does not exist.")
        super().__init__(model, dataset, config_file_list, config_dict)
        if check and self.problems:
            raise OptionError(self.problems)

    def _set_default_parameters(self):
        wrong = check_choices(self.final_config_dict)
        if wrong:
            self.problems.append(f"unknown option value: {wrong}.")
        super()._set_default_parameters()

    def _load_cmd_line(self):
        return self._convert_config_dict(parse_cmd_args(self._cmd_args))

    def _convert_config_dict(self, config_dict):
        """Strings of --key=value and of ``config_dict`` read as Python literals (``1e-3``, ``[0.8, 0.1, 0.1]``,
        ``{'RS': [...]}``, ``True``), else kept as text. RecBole's own ``_convert_config_dict`` calls ``eval`` on
        every string: a saved run's ``config.json`` holding ``"__import__('os').system(...)"`` ran that command
        when the run was loaded. ``ast.literal_eval`` evaluates nothing but literals."""
        import ast

        for key, param in config_dict.items():
            if not isinstance(param, str):
                continue
            try:
                value = ast.literal_eval(param.strip())
            except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
                lowered = param.strip().lower()
                value = True if lowered == "true" else False if lowered == "false" else param
            if value is not None and not isinstance(value, (str, int, float, list, tuple, dict, bool)):
                value = param  # a set, bytes or complex number: RecBole keeps those as the text
            config_dict[key] = value
        return config_dict

    def _get_model_and_dataset(self, model, dataset):
        if model is None:
            model = self.external_config_dict.get("model")
        if model is None:
            raise ValueError("no model given: pass --model=NAME or set `model:` in a YAML file.")
        if dataset is None:
            dataset = self.external_config_dict.get("dataset")
        if dataset is None:
            raise ValueError("no dataset given: pass --dataset=NAME or set `dataset:` in a YAML file.")
        name = ALIASES.get(model, model) if isinstance(model, str) else model.__name__
        # `model_options: {CoRA: {epochs: 1}}`: options for one model only (handy for comparisons); they
        # rank with the file/dict options they came from, under --key=value.
        per_model = {}
        for key, value in (self.external_config_dict.get("model_options") or {}).items():
            if ALIASES.get(key, key) == name:  # `MF: {...}` is BPR's, as `--compare MF` runs BPR
                per_model.update(value or {})
            else:
                try:
                    get_model(key)
                except ValueError as err:  # an entry no model would ever read: say so, not ignore it
                    self.problems.append(f"model_options has an entry for '{key}', which is no model ({err}); its "
                                         "keys are model names as --model and --compare take them.")
        for key, value in per_model.items():
            if key not in self.cmd_config_dict:
                self.external_config_dict[key] = value
        model_class = get_model(name) if isinstance(model, str) else model
        self.task = self._resolve_task(name, model_class)
        # the task's options given in the user's files and dicts, under the options given there directly
        for key, value in ((self.external_config_dict.get("task_options") or {}).get(self.task) or {}).items():
            if key == "eval_args":
                self.external_config_dict[key] = _merge_eval_args(value, self.external_config_dict.get(key))
            elif key not in self.external_config_dict:
                self.external_config_dict[key] = value
        return name, model_class, dataset

    def _resolve_task(self, name, model_class):
        """The run's task (``task``, or the model's own); a task the model cannot run is refused here, before
        anything is loaded."""
        tasks = model_tasks(model_class)
        task = self.external_config_dict.get("task") or tasks[0]
        if task not in task_names():
            self.problems.append(f"task '{task}' is unknown: use one of {task_names()} (properties/task/).")
        elif task not in tasks:
            self.problems.append(
                f"{name} does not run the {task} task (it runs: {', '.join(tasks)}): set `task: {tasks[0]}` or choose "
                f"a model of the {task} task."
            )
        else:
            return task
        return tasks[0]  # the model's own task, so that the remaining options can still be read and checked

    def _load_plugin_file(self, path):
        """Load one of the plugin's YAML files into the internal dict (``eval_args`` merged key by key)."""
        eval_args = self.internal_config_dict.get("eval_args")
        values = self._update_internal_config_dict(str(path)) or {}
        if "eval_args" in values:
            self.internal_config_dict["eval_args"] = _merge_eval_args(eval_args, values["eval_args"])
        return values

    def _load_internal_config_dict(self, model, model_class, dataset):
        super()._load_internal_config_dict(model, model_class, dataset)
        for path in (
            PROPERTIES_DIR / "overall.yaml",
            PROPERTIES_DIR / "model" / f"{model}.yaml",
            TASKS_DIR / f"{self.task}.yaml",
            DATASET_CONFIGS_DIR / f"{dataset}.yaml",
        ):
            if path.is_file():
                values = self._load_plugin_file(path)
                if path.parent == DATASET_CONFIGS_DIR:
                    # RecBole compares these when it reuses a saved dataset.
                    values = {**values, **((values.get("task_options") or {}).get(self.task) or {})}
                    self.parameters["Dataset"] += [k for k in values if k not in self.parameters["Dataset"]]
        for key, value in ((self.internal_config_dict.get("task_options") or {}).get(self.task) or {}).items():
            if key == "eval_args":
                value = _merge_eval_args(self.internal_config_dict.get("eval_args"), value)
            self.internal_config_dict[key] = value
        self.internal_config_dict["task"] = self.task
        get_task(self.task).configure(self.internal_config_dict, model_tasks(self.model_class)[0])

    def _get_final_config_dict(self):
        final = super()._get_final_config_dict()
        final["task"] = self.task
        final["eval_args"] = _merge_eval_args(self.internal_config_dict.get("eval_args"), self.external_config_dict.get("eval_args"))
        # Cross-entropy over all items (RecBole's sequential models with loss_type CE, and every next-item LLM model:
        # `ranks_all_items`) needs no sampled negatives: RecBole's default would add a random item per row as a second
        # target, drawn anew at every load (RecBole users set this themselves; a user's own value is kept).
        over_all_items = final.get("loss_type") == "CE" or getattr(self.model_class, "ranks_all_items", False) \
            or getattr(self.model_class, "draws_own_negatives", False)
        if (
            final.get("MODEL_TYPE") == ModelType.SEQUENTIAL and over_all_items
            and (get_task(self.task).ranking or self.model_class.__name__ not in ("DIN", "DIEN"))
            and "train_neg_sample_args" not in self.external_config_dict
        ):
            final["train_neg_sample_args"] = None
        return final
