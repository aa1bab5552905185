"""Trainers: RecBole's own, with labeled all/warm/cold evaluation and safe checkpoints mixed in.

``get_trainer`` (in ``recbole_cora.utils``) wraps whichever RecBole trainer a model would get
(``Trainer``, ``KGTrainer``, ...) with these mixins, so RecBole baselines and plugin models are
trained and evaluated by the same code on the same split.
"""

import functools

import torch
from recbole.data.dataloader import FullSortEvalDataLoader
from recbole.utils import InputType, set_color
from tqdm import tqdm

from recbole_cora.compat import atomic_torch_save, load_recbole_checkpoint
from recbole_cora.evaluator import LabeledCollector, evaluate_groups


class CheckpointMixin:
    """Atomic checkpoint writes, and reads that work on torch>=2.6 (see ``compat``)."""

    def _save_checkpoint(self, epoch, verbose=True, **kwargs):
        if not self.config["single_spec"] and self.config["local_rank"] != 0:
            return
        saved_model_file = kwargs.pop("saved_model_file", self.saved_model_file)
        state = {
            "config": self.config,
            "epoch": epoch,
            "cur_step": self.cur_step,
            "best_valid_score": self.best_valid_score,
            "state_dict": self.model.state_dict(),
            "other_parameter": self.model.other_parameter(),
            "optimizer": self.optimizer.state_dict(),
        }
        atomic_torch_save(state, saved_model_file)
        if verbose:
            self.logger.info(set_color("Saving current", "blue") + f": {saved_model_file}")

    def _load_checkpoint(self, checkpoint_file):
        return load_recbole_checkpoint(
            checkpoint_file, map_location=self.device, trusted_dirs=[self.checkpoint_dir]
        )

    def resume_checkpoint(self, resume_file):
        checkpoint = self._load_checkpoint(resume_file)
        self.saved_model_file = str(resume_file)
        self.start_epoch = checkpoint["epoch"] + 1
        self.cur_step = checkpoint["cur_step"]
        self.best_valid_score = checkpoint["best_valid_score"]
        self.model.load_state_dict(checkpoint["state_dict"])
        self.model.load_other_parameter(checkpoint.get("other_parameter"))
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.logger.info(f"Checkpoint loaded. Resume training from epoch {self.start_epoch}")

    def load_best_model(self, model_file=None):
        checkpoint_file = model_file or self.saved_model_file
        checkpoint = self._load_checkpoint(checkpoint_file)
        self.model.load_state_dict(checkpoint["state_dict"])
        self.model.load_other_parameter(checkpoint.get("other_parameter"))
        self.logger.info(f"Loading model structure and parameters from {checkpoint_file}")

    @torch.no_grad()
    def evaluate(self, eval_data, load_best_model=True, model_file=None, show_progress=False):
        if eval_data and load_best_model:
            self.load_best_model(model_file)
        return super().evaluate(eval_data, load_best_model=False, show_progress=show_progress)


class LabeledEvaluationMixin(CheckpointMixin):
    """Labeled (CTR-style) evaluation: AUC / UAUC / LogLoss for all, warm and cold rows.

    Models trained pairwise (BPR) score with an unbounded dot product; their scores pass through a
    sigmoid so that LogLoss is defined (AUC and UAUC are unchanged by it).
    """

    def __init__(self, config, model):
        super().__init__(config, model)
        self.eval_collector = LabeledCollector(config)
        self.scores_are_logits = config["MODEL_INPUT_TYPE"] == InputType.PAIRWISE

    @torch.no_grad()
    def evaluate(self, eval_data, load_best_model=True, model_file=None, show_progress=False):
        if not eval_data:
            return None
        if isinstance(eval_data, FullSortEvalDataLoader):
            raise ValueError(
                "labeled evaluation got a full-sort loader: set `eval_args.mode: labeled` for "
                "AUC/UAUC/LogLoss, or use RecBole's ranking metrics with `mode: full`."
            )
        if load_best_model:
            self.load_best_model(model_file)
        self.model.eval()
        batches = (
            tqdm(eval_data, total=len(eval_data), ncols=100, desc=set_color("Evaluate   ", "pink"))
            if show_progress
            else eval_data
        )
        for batched_data in batches:
            interaction, scores, positive_u, positive_i = self._neg_sample_batch_eval(batched_data)
            if self.scores_are_logits:
                scores = torch.sigmoid(scores)
            self.eval_collector.eval_batch_collect(scores, interaction, positive_u, positive_i)
        struct = self.eval_collector.get_data_struct()
        result = evaluate_groups(self.evaluator, struct)
        self.wandblogger.log_eval_metrics(result, head="eval")
        return result


@functools.lru_cache(maxsize=None)
def with_mixin(mixin, base):
    """``base`` (a RecBole trainer class) with ``mixin`` in front of it, made once per pair."""
    return type(f"{mixin.__name__.replace('Mixin', '')}{base.__name__}", (mixin, base), {})
