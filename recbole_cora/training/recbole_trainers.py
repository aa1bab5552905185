"""RecBole's own trainers with safe checkpoints and the task's evaluation mixed in (``Task.recbole_mixin``: labeled
all/warm/cold, full ranking with the user's earlier items masked, or fixed candidate lists).
``recbole_cora.utils.get_trainer`` wraps whichever RecBole trainer a model would get (``Trainer``, ``KGTrainer``,
...) with them, so RecBole baselines and plugin models are trained and evaluated by the same code on the same
split."""

import functools

import torch
from recbole.utils import set_color

from recbole_cora import checkpoint as ckpt
from recbole_cora.compat import atomic_torch_save
from recbole_cora.recbole_files import read_recbole_model, write_recbole_model


class CheckpointMixin:
    """Atomic checkpoint writes; reads that never unpickle (``recbole_files``): beside RecBole's ``.pth`` the model
    is saved as safetensors + JSON, and the best model is loaded back from those."""

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
            "run": ckpt.run_record(self.config, self.model, getattr(self, "_split_fingerprint", None)),  # inference
        }
        atomic_torch_save(state, saved_model_file)  # for RecBole's own tools; recbole-cora reads the pair below
        write_recbole_model(saved_model_file, self.model, self.config, run=state["run"], epoch=epoch)
        if verbose:
            self.logger.info(set_color("Saving current", "blue") + f": {saved_model_file}")

    def fit(self, train_data, *args, **kwargs):
        self._split_fingerprint = getattr(train_data._dataset, "fingerprint", None)  # saved with the checkpoint
        return super().fit(train_data, *args, **kwargs)

    def _load_checkpoint(self, checkpoint_file):
        """The safetensors + JSON pair ``_save_checkpoint`` wrote beside the ``.pth``: nothing is unpickled."""
        return read_recbole_model(checkpoint_file, map_location=self.device)

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


@functools.lru_cache(maxsize=None)
def with_mixin(mixin, base):
    """``base`` (a RecBole trainer class) with ``mixin`` (a task's evaluation, or None) and ``CheckpointMixin`` in
    front of it, made once per pair."""
    mixins = (CheckpointMixin,) if mixin is None or issubclass(mixin, CheckpointMixin) else (mixin, CheckpointMixin)
    if all(issubclass(base, m) for m in mixins):
        return base
    name = (mixin or CheckpointMixin).__name__.replace("Mixin", "")
    return type(f"{name}{base.__name__}", tuple(m for m in mixins if not issubclass(base, m)) + (base,), {})
