"""RecLoRA's conventional recommender stage: RecBole's DIN, trained by RecBole on the labeled rows of the same
train split (a CTR model learns from the labels), then frozen and read per sample (``FrozenDINEncoder``).

Its folder holds RecBole's checkpoint of the best epoch and, written last, ``encoder.json``: dataset name,
split fingerprint, history length and the user/item tokens in DIN's id order.
"""

from recbole_cora.model.encoders import DIN_STAGE_FILE
from recbole_cora.stages.runner import KEY_OPTIONS, run_recbole_stage, stage_config, write_stage_meta
from recbole_cora.tasks import get_task

DIN_ENCODERS = ("DIN",)
# What changes what DIN learns, besides the split: its own sizes, the history it reads, the features loaded.
DIN_KEY_OPTIONS = KEY_OPTIONS + (
    "mlp_hidden_size", "dropout_prob", "pooling_mode", "MAX_ITEM_LIST_LENGTH", "load_col", "numerical_features",
)


def din_stage_config(config):
    """The DIN stage's Config: the run's data and split, DIN's defaults, ``reclora_encoder_config`` on top, and
    the run's long history length as DIN's sequence length."""
    model = config["reclora_encoder"]
    if model not in DIN_ENCODERS:
        raise ValueError(f"reclora_encoder {model!r} has no sequential stage: use one of {list(DIN_ENCODERS)} or 'cf'.")
    options = dict(config["reclora_encoder_config"] or {})
    if get_task(config).ranking:
        # A ranking task's rows (the candidate task's) are next-item positives, each with one uniformly sampled
        # negative (label 0: the task's Config gives DIN that); the long history is RecBole's ID history
        # (MAX_ITEM_LIST_LENGTH), which the run's dataset carries as well.
        options["MAX_ITEM_LIST_LENGTH"] = int(config["MAX_ITEM_LIST_LENGTH"])
        options["history_len"] = config["history_len"]
    else:
        # A CTR model learns from the labeled rows as they are: no sampled negatives (RecBole's default for DIN).
        options.setdefault("train_neg_sample_args", None)
        # DIN reads exactly the long history the LLM model's dataset carries (its attention mask has this width).
        options["MAX_ITEM_LIST_LENGTH"] = options["history_len"] = int(config["history_len"])
    options["repeatable"] = True  # RecBole requires it of sequential models (labeled evaluation does not use it)
    return stage_config(config, model, options)


def run_din_stage(config, dataset=None):
    """Train DIN for ``config``'s dataset and split on the labeled train rows, or find it; returns its folder."""

    def save(model, stage_dataset, fingerprint, stage):
        write_stage_meta(stage, DIN_STAGE_FILE, stage_dataset, fingerprint,
                         history_len=int(stage_dataset.config["MAX_ITEM_LIST_LENGTH"]))  # the ID history's width

    return run_recbole_stage(din_stage_config(config), dataset, DIN_KEY_OPTIONS, DIN_STAGE_FILE, save,
                             what="the train split's labeled rows")
