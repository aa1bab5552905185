"""What a run is about to do, said before it does it: the data and its split, the stages it trains or reuses
(with their epoch caps and where to change them), the model's training budget and the rows it is evaluated on;
then, once the LLM is loaded, one prompt exactly as the LLM reads it. The trainer adds a time estimate from the
first measured steps (``LLMTrainer``)."""

from recbole_cora.data.rows import eval_row_subset, fixed_row_subset
from recbole_cora.model.abstract_llm_recommender import LLMRecommender
from recbole_cora.tasks import get_task


def _n(value):
    return f"{value:,}"


def duration(seconds):
    """``1 h 05 min``, ``12 min 30 s``, ``45 s``."""
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
    if seconds >= 60:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds} s"


def _warm(part, config):
    field = config["WARM_FIELD"] or "warm"
    feat = part.inter_feat
    if field not in feat or len(feat) == 0:
        return ""
    return f" ({float(feat[field].float().mean()) * 100:.0f} % warm)"


def _rows(n, config, unit="rows"):
    shown = len(eval_row_subset(n, config))
    return f"{_n(shown)} of {_n(n)} {unit} (eval_rows)" if shown < n else f"all {_n(n)} {unit}"


def _stage_line(stage):
    if stage.get("given"):
        return f"  stage     {stage['role']}: the given folder {stage['folder']} ({stage['given']})"
    head = f"  stage     {stage['model']} ({stage['role']}): "
    if stage["done"]:
        return head + f"reused from {stage['folder']}"
    return head + (
        f"trains into {stage['folder']}: at most {stage['epochs']} epochs, stopping after {stage['stopping_step']} "
        f"evaluations without a better {stage['valid_metric']} (set `{stage['budget_option']}: {{epochs: N}}`)"
    )


def training_steps(config, train_rows):
    """(rows per epoch, optimizer steps per epoch) of an LLM model's trainer (drop_last batches)."""
    per_epoch = train_rows
    if config["train_rows_per_epoch"]:
        per_epoch = min(per_epoch, int(config["train_rows_per_epoch"]))
    batch = int(config["train_batch_size"])
    steps = (per_epoch // batch if per_epoch >= batch else 1) // int(config["gradient_accumulation_steps"] or 1)
    return per_epoch, max(steps, 1)


def _valid_clause(config, rows):
    step = config["eval_step"]
    return f"valid every {step} epoch(s) on {rows}" if step and step > 0 else "no valid pass (eval_step 0: each epoch is saved)"


def describe_plan(config, dataset, splits, model_class, stages=()):
    """The plan as lines of text (the pipeline logs them before the first stage starts)."""
    train, valid, test = (data._dataset for data in splits)
    task = get_task(config)
    is_llm = issubclass(model_class, LLMRecommender)
    what = f"{config['model']} on {config['dataset']} ({task.name} task)"
    if is_llm:
        what += f", LLM {config['llm_path']} ({config['llm_dtype']}, {config['device']})"
    lines = [f"plan: {what}"]
    feat = dataset.inter_feat
    users, items = (len(feat[field].unique()) for field in (dataset.uid_field, dataset.iid_field))
    lines.append(f"  data      {_n(len(feat))} interactions of {_n(users)} users and {_n(items)} items (after filters)")
    unit = task.unit
    lines.append(f"  split     {task.split_text(config['eval_args'])}: train {_n(len(train))} rows, valid {_n(len(valid))} "
                 f"{unit}{_warm(valid, config)}, test {_n(len(test))} {unit}{_warm(test, config)}")
    for stage in stages:
        lines.append(_stage_line(stage))
    epochs = config["epochs"]
    if is_llm:
        subset = fixed_row_subset(len(train), config["llm_train_samples"], config["seed"])  # RecLoRA's, TALLRec's
        pool = len(train) if subset is None else len(subset)
        rows, steps = training_steps(config, pool)
        if subset is None:
            sampled = f"{_n(rows)} of the {_n(len(train))} train rows drawn anew each epoch (train_rows_per_epoch)" \
                if rows < len(train) else f"all {_n(len(train))} train rows"
        else:
            sampled = f"a fixed sample of {_n(pool)} of the {_n(len(train))} train rows (llm_train_samples)" + (
                f", {_n(rows)} of them drawn anew each epoch (train_rows_per_epoch)" if rows < pool else "")
        accumulation = int(config["gradient_accumulation_steps"] or 1)
        step_rows = f"{config['train_batch_size']}" if accumulation == 1 else \
            f"{config['train_batch_size'] * accumulation} ({config['train_batch_size']} x {accumulation} accumulated)"
        stages = model_class.stages_of(config) or [None]
        if stages != [None]:  # CoLLM's steps, Laser's stages: each its own epochs (stage<k>_epochs, else epochs)
            per_stage = [config[f"stage{k}_epochs"] or config["epochs"] for k in stages]
            epochs = " + ".join(f"{n} (stage {k})" for k, n in zip(stages, per_stage))
            total = sum(per_stage)
        else:
            total = epochs
        lines.append(f"  train     at most {epochs} epoch(s) of {sampled}: {_n(steps)} steps of {step_rows} "
                     f"rows per epoch, {_n(steps * total)} in all; learning rate {config['learning_rate']}")
        lines += model_class.plan_lines(config, train.item_num - 1, steps)
    else:
        lines.append(f"  train     RecBole's trainer: at most {epochs} epochs on {_n(len(train))} train rows, stopping after "
                     f"{config['stopping_step']} evaluations without a better {config['valid_metric']}")
    lines.append(f"  evaluate  {_valid_clause(config, _rows(len(valid), config, unit))}; test on "
                 f"{_rows(len(test), config, unit)}{task.test_text(config, test)}")
    if is_llm and config["curve_epochs"]:
        lines.append(f"  curve     the test rows are also scored after epochs {list(config['curve_epochs'])}")
    if is_llm:
        lines.append("  time      estimated from the first training steps (below)")
    return lines


def describe_prompt(model, interaction, lists=None):
    """One prompt exactly as the LLM reads it (the text given to its tokenizer) and its token count, for the first
    row of ``interaction``; [] for a model without prompts. A model that shows a candidate list (RSLLM) shows the
    first row's list (``lists``: the test split's candidate lists)."""
    lines = []
    if model.prompt_shows_candidates and lists is not None:
        text, ids = model.example_prompt(interaction[:1], lists[:1])
        return [f"example prompt (the first test user and its candidate list, {len(ids)} tokens):", text]
    for name, builder in model.prompt_builders().items():
        with_target = "{target}" in builder.template
        text, ids = builder.example(interaction, with_target=with_target)
        lines.append(f"example prompt ({name}, the first test row, {len(ids)} tokens):")
        lines.append(text)
    return lines
