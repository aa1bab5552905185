"""The sequential recommender stage of next-item LLM models (Laser): a RecBole sequential model (BERT4Rec by
default, SASRec or GRU4Rec as options) trained by RecBole on the next-item train split, then frozen. Laser reads
its item embeddings of the user's history; the pipeline also reports its own full ranking beside Laser's.

Its folder holds the best epoch's model (safetensors + JSON, and RecBole's ``.pth`` beside them) and, written last,
``encoder.json``: dataset name,
model, split fingerprint and the item tokens in its id order (``FrozenSequentialRecommender`` checks them).
"""

from recbole_cora.model.encoders import SEQUENCE_STAGE_FILE
from recbole_cora.stages.runner import KEY_OPTIONS, run_recbole_stage, stage_config, write_stage_meta

SEQUENCE_KEY_OPTIONS = KEY_OPTIONS + (
    "hidden_size", "inner_size", "n_heads", "hidden_dropout_prob", "attn_dropout_prob", "mask_ratio", "loss_type",
    "MAX_ITEM_LIST_LENGTH", "num_layers", "dropout_prob",
)


def sequence_stage_config(config):
    """The stage's Config: the run's data and next-item split, ``sequential_encoder``'s RecBole defaults, and
    ``sequential_encoder_config`` on top (the LLM model's own history length is the encoder's too)."""
    options = {"MAX_ITEM_LIST_LENGTH": config["MAX_ITEM_LIST_LENGTH"], "train_neg_sample_args": None}
    options.update(config["sequential_encoder_config"] or {})
    return stage_config(config, config["sequential_encoder"], options)


def run_sequence_stage(config, dataset=None):
    """Train the sequential recommender for ``config``'s dataset and split, or find it; returns its folder."""

    def save(model, stage_dataset, fingerprint, stage):
        write_stage_meta(stage, SEQUENCE_STAGE_FILE, stage_dataset, fingerprint)

    return run_recbole_stage(sequence_stage_config(config), dataset, SEQUENCE_KEY_OPTIONS, SEQUENCE_STAGE_FILE, save,
                             what="the next-item train split")
