"""Every option that can be checked without training is checked before the first stage starts, and every problem
found is listed at once (``OptionError``): a template slot missing from ``text_fields`` must not surface 99 s into
a run, after a CF stage has trained (on a large dataset: hours).

``check_run(config, model_class)`` is what the pipeline calls, right after the Config and before the dataset
is built. It collects:

* the Config's own problems (a model on a task it does not run, a value outside an option's fixed set);
* numbers: budgets, batch sizes and lengths that must be whole numbers of at least 1 (or 0), ``curve_epochs``
  within ``epochs``;
* times: ``time_window`` and a ``TB`` split, parsed as dates or timestamps, in order;
* data files: the dataset folder and its ``.inter``; for models that read item text, ``text_fields`` as columns
  of the ``.item`` header and ``item_text_template``'s slots among them;
* the model's prompt templates (``prompt_templates`` of the model class: slots required, allowed, once);
* the stages it needs: ``cf_model`` a RecBole general model, ``sequential_encoder`` a sequential one;
* the LLM: ``llm_path`` found, placement options that fit together, and, with its tokenizer (loaded alone, in
  a second or two), every answer word one token after each template's end and the placeholder token one token.
"""

import difflib
import functools
import os
from logging import getLogger
from pathlib import Path

import yaml
from recbole.utils import ModelType
from recbole.utils.argument_list import dataset_arguments, evaluation_arguments, general_arguments, training_arguments

from recbole_cora.config import DATASET_CONFIGS_DIR, PROPERTIES_DIR, OptionError
from recbole_cora.data.dataset import parse_time
from recbole_cora.data.prompts import template_problems, template_slots
from recbole_cora.llm.loading import llm_option_problems, load_tokenizer
from recbole_cora.llm.scoring import answer_token_ids
from recbole_cora.model.abstract_llm_recommender import LabeledLLMRecommender, LLMRecommender
from recbole_cora.model.lookup import get_model
from recbole_cora.stages import required_stages
from recbole_cora.tasks import get_task

__all__ = ["OptionError", "check_run"]

# (option, smallest allowed value): whole numbers; ~ (None) means the option's "all" or "off"
WHOLE_NUMBERS = (
    ("epochs", 0), ("train_batch_size", 1), ("eval_batch_size", 1), ("train_rows_per_epoch", 1), ("eval_rows", 1),
    ("history_len", 0), ("max_prompt_tokens", 1), ("gradient_accumulation_steps", 1), ("checkpoint_steps", 0),
    ("eval_step", 0), ("stopping_step", 1), ("candidate_count", 2), ("max_answer_tokens", 1),
    ("item_refresh_steps", 1),
)


def number_problems(config):
    problems = []
    for option, least in WHOLE_NUMBERS:
        value = config[option]
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            problems.append(f"{option} {value!r}: give a whole number of at least {least}" + (" (or ~ for all)" if
                            option in ("train_rows_per_epoch", "eval_rows") else "") + ".")
    for option in ("learning_rate",):
        value = config[option]
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0):
            problems.append(f"{option} {value!r}: give a number of at least 0.")
    curve = config["curve_epochs"]
    if curve:  # a stage may train longer than `epochs` (CoLLM's and Laser's stage1_epochs / stage2_epochs)
        stages = [config[key] for key in ("epochs", "stage1_epochs", "stage2_epochs") if key in config]
        epochs = max((e for e in stages if isinstance(e, int) and not isinstance(e, bool)), default=None)
        if not isinstance(curve, (list, tuple)) or not all(isinstance(e, int) and not isinstance(e, bool) for e in curve):
            problems.append(f"curve_epochs {curve!r}: give a list of epoch numbers, e.g. [1, 4, 16].")
        else:
            late = [e for e in curve if e < 1 or (isinstance(epochs, int) and e > epochs)]
            if late:
                problems.append(f"curve_epochs {late} lie outside the run's epochs 1..{epochs}: raise `epochs` or drop them.")
    return problems


def time_problems(config):
    problems = []
    window = config["time_window"]
    if window:
        option = f"time_window {window}"
        if not isinstance(window, (list, tuple)) or len(window) != 2:
            problems.append(f"{option}: give [start, end), e.g. ['2001-06-01', '2003-02-01'].")
        else:
            try:
                if not parse_time(window[0], option) < parse_time(window[1], option):
                    problems.append(f"{option}: the start must come before the end.")
            except ValueError as err:
                problems.append(str(err))
    split = (config["eval_args"] or {}).get("split")
    if isinstance(split, dict) and "TB" in split:
        boundaries = split["TB"]
        option = f"eval_args.split.TB {boundaries}"
        if not isinstance(boundaries, (list, tuple)) or len(boundaries) != 2:
            problems.append(f"{option}: give two boundaries [valid_start, test_start] (dates or timestamps).")
        else:
            try:
                start = parse_time(boundaries[0], option)
                if not str(boundaries[1]).strip().endswith("%") and not start < parse_time(boundaries[1], option):
                    problems.append(f"{option}: the boundaries must be increasing.")
            except ValueError as err:
                problems.append(str(err))
    return problems


def item_file_columns(path, config):
    """The column names of an atomic file's header."""
    with open(path, encoding=config["encoding"] or "utf-8") as f:
        header = f.readline().rstrip("\r\n").split(config["field_separator"] or "\t")
    return [column.split(":")[0] for column in header]


def data_problems(config, reads_text):
    folder, token = config["data_path"], config["dataset"]
    if not os.path.isdir(folder):
        return [f"dataset folder '{folder}' does not exist. Set `data_path` to the folder that contains "
                f"'{token}/{token}.inter' (e.g. --data_path=../shared/datasets), or check the `dataset` name."]
    if config["benchmark_filename"] is None and not os.path.isfile(os.path.join(folder, f"{token}.inter")):
        return [f"atomic file '{os.path.join(folder, token)}.inter' is missing: a dataset needs at least "
                f"'{token}.inter' in its folder (see docs/datasets.md)."]
    if not reads_text:
        return []
    problems = []
    fields = list(config["text_fields"] or [])
    item_file = os.path.join(folder, f"{token}.item")
    if not fields:
        problems.append(f"{config['model']} reads item text: set `text_fields` (and `item_text_template`) for dataset "
                        f"'{token}' (see docs/datasets.md).")
    elif not os.path.isfile(item_file):
        problems.append(f"`text_fields` {fields} need the item file '{item_file}', which is missing. Add it, or set "
                        "`text_fields: []`.")
    else:
        columns = item_file_columns(item_file, config)
        missing = [field for field in fields if field not in columns]
        if missing:
            problems.append(f"text field(s) {missing} named in `text_fields` are not columns of '{item_file}' (its "
                            f"columns: {columns}). Fix `text_fields` in your YAML or the file's header.")
    template = config["item_text_template"]
    if template and fields:
        try:
            unknown = [slot for slot in template_slots(template) if slot not in fields]
        except ValueError as err:
            problems.append(f"item_text_template {template!r} cannot be read as a template ({err}).")
        else:
            if unknown:
                problems.append(f"item_text_template {template!r} names {unknown}, which are not in text_fields "
                                f"{fields}: add them to text_fields or change the template.")
    problems += get_task(config).option_problems(config)
    return problems


def prompt_problems(config, model_class):
    problems = []
    for option, (required, optional, once) in getattr(model_class, "prompt_templates", {}).items():
        problems += template_problems(option, config[option], required, optional, once)
    return problems


def stage_problems(config, model_class):
    required = required_stages(config, model_class)
    wanted = {"cf": ("cf_model", ModelType.GENERAL, "a RecBole general model such as LightGCN or BPR"),
              "sequence": ("sequential_encoder", ModelType.SEQUENTIAL, "a RecBole sequential model such as SASRec")}
    problems = []
    for kind, folder_option in required.items():
        if kind not in wanted or config[folder_option]:
            continue
        option, model_type, what = wanted[kind]
        try:
            stage_model = get_model(str(config[option]))
        except ValueError as err:
            problems.append(f"{option}: {err}")
            continue
        if stage_model.type != model_type:
            problems.append(f"{option} {config[option]!r} is not {what}.")
    return problems


def tokenizer_problems(config, model_class, tokenizer):
    problems = []
    templates = getattr(model_class, "prompt_templates", {})
    words = config["answer_words"] or ["Yes", "No"]
    if issubclass(model_class, LabeledLLMRecommender):  # it answers Yes or No
        if not isinstance(words, (list, tuple)) or len(words) != 2 or not all(isinstance(w, str) and w for w in words):
            return [f"answer_words {words!r}: give two words, the positive one first, e.g. ['Yes', 'No']."]
        for option in templates:
            end = config[option].rstrip("\n").split("{target}")[-1] or config[option]
            try:
                answer_token_ids(tokenizer, words, after=end)
            except ValueError as err:
                problems.append(f"{err} (after the end of {option})")
                break
    if any(once for _, _, once in templates.values()) or getattr(model_class, "uses_placeholder", False):
        placeholder = config["placeholder_token"] or tokenizer.unk_token or tokenizer.pad_token
        if len(tokenizer.encode(placeholder, add_special_tokens=False)) != 1:
            problems.append(f"placeholder_token {placeholder!r} is not one token for this tokenizer: name a special token.")
    return problems


# Options RecBole reads without declaring them in a YAML (its distributed setup), and those its Config derives.
RECBOLE_RUNTIME_OPTIONS = ("nproc", "offset", "world_size", "ip", "port", "local_rank", "device", "single_spec",
                           "MODEL_TYPE", "MODEL_INPUT_TYPE", "eval_type", "eval_neg_sample_args", "config_files")


@functools.lru_cache(maxsize=1)
def declared_options():
    """Every option some YAML of RecBole or of this package declares: RecBole's overall, dataset and model
    properties, the plugin's overall, task, model and preset files, the dataset configs (their ``task_options``
    too)."""
    import recbole

    keys = set(RECBOLE_RUNTIME_OPTIONS)
    for arguments in (general_arguments, training_arguments, evaluation_arguments, dataset_arguments):
        keys |= set(arguments)
    for folder in (Path(recbole.__file__).parent / "properties", DATASET_CONFIGS_DIR):
        keys |= _yaml_option_keys(folder)
    return frozenset(keys | package_options())


@functools.lru_cache(maxsize=1)
def package_options():
    """The options this package's own option files declare (``properties/``): overall, task, model and presets."""
    return frozenset(_yaml_option_keys(PROPERTIES_DIR))


def _yaml_option_keys(folder):
    """The keys of every YAML file under ``folder``, and those of their ``task_options`` entries."""
    keys = set()
    for path in folder.rglob("*.yaml"):
        values = yaml.safe_load(path.read_text()) or {}
        if isinstance(values, dict):
            keys |= set(values)
            for options in (values.get("task_options") or {}).values():
                keys |= set(options or {})
    return keys


def unknown_options(config):
    """``(option, where, suggestion)`` for each option the user gave (YAML files, ``config_dict``, command line) that
    no option file declares: RecBole takes any key, so a misspelled option would be silently ignored."""
    sources = (("the config files", config.file_config_dict), ("config_dict", config.variable_config_dict),
               ("the command line", config.cmd_config_dict))
    known = declared_options()
    found = []
    for where, given in sources:
        for key in sorted(given or {}):
            if key not in known:
                close = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.75)
                found.append((key, where, close[0] if close else None))
    return found


def check_run(config, model_class):
    """Raise ``OptionError`` listing every problem found in ``config`` for ``model_class`` without training."""
    problems = list(getattr(config, "problems", []))
    problems += number_problems(config) + time_problems(config)
    is_llm = issubclass(model_class, LLMRecommender)
    problems += data_problems(config, reads_text=is_llm)
    if is_llm:
        problems += prompt_problems(config, model_class) + stage_problems(config, model_class)
        problems += model_class.option_problems(config)
        llm = llm_option_problems(config)
        problems += llm
        if not llm and not prompt_problems(config, model_class):
            try:
                tokenizer = load_tokenizer(config)
            except (ValueError, OSError) as err:
                problems.append(f"llm_path {config['llm_path']!r}: its tokenizer could not be loaded ({err}).")
            else:
                problems += tokenizer_problems(config, model_class, tokenizer)
    if problems:
        raise OptionError(problems)
    for key, where, close in unknown_options(config):
        getLogger().warning(f"option '{key}' (from {where}) is no option of RecBole or recbole-cora: it is ignored"
                            + (f"; did you mean '{close}'?" if close else " unless your own model reads it."))
    getLogger().debug("options checked before training: no problem found")
