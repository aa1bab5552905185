"""What happens around the training loop, as callbacks (transformers' ``TrainerCallback`` is the model): the
training loop calls ``on_epoch_begin``, ``on_step_end`` and ``on_epoch_end`` with a ``TrainEvent`` that carries what
each needs; a callback is given its model and the evaluation loop when it is made and never calls the trainer.

* ``ItemMatrix``: Laser's matrix of every item's vector, computed with the weights of the epoch's start and again
  every ``item_refresh_steps``;
* ``TimeEstimate``: one log line, from the first steps, of how long training will take (item-matrix passes counted);
* ``LearningCurve``: the current weights scored on the test split after the ``curve_epochs`` epochs.
"""

import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from recbole.utils import set_color
from tqdm import tqdm

from recbole_cora.training.resume import plain_result


@dataclass
class TrainEvent:
    epoch: int  # 0-based
    batches: int = 0  # batches done in this epoch (a resumed epoch starts where it stopped)
    n_batches: int = 0  # batches in this epoch
    synced: bool = True  # the optimizer stepped (gradient accumulation)
    resumed: bool = False  # the epoch goes on from a resume state
    rows: int = 0  # training rows in this epoch
    seconds: float = 0.0  # this epoch's training seconds (on_epoch_end)
    model_file: str = ""  # where the trainer saves the model (the curve's file lies beside it)
    show_progress: bool = False


class TrainerCallback:
    def on_epoch_begin(self, event):
        pass

    def on_step_end(self, event):
        pass

    def on_epoch_end(self, event):
        pass


class ItemMatrix(TrainerCallback):
    """Laser's item matrix: every item's vector, with the weights of each epoch's start (unless it already is
    theirs: an evaluation recomputed it, or a run resumed inside the epoch has its matrix back from its resume
    state), and every ``item_refresh_steps`` optimizer steps while its weights train."""

    def __init__(self, model, evaluation, logger, accumulation_steps):
        self.model, self.evaluation, self.logger, self.accumulation_steps = model, evaluation, logger, accumulation_steps
        self.seconds = None  # the last pass, counted by the time estimate

    def compute(self, show_progress=False):
        from recbole_cora.plan import duration

        self.seconds = self.evaluation.item_matrix(self.model, show_progress)
        self.logger.info(set_color("item matrix", "yellow") + f": {self.model.n_items - 1} items through the LLM in "
                         f"{duration(self.seconds)}")

    def ensure(self, show_progress=False):
        if not self.model.has_item_matrix:
            self.compute(show_progress)

    @property
    def refresh_steps(self):
        return int(self.model.item_refresh_steps or 0) if self.model.item_side_trains else 0

    def on_epoch_begin(self, event):
        if not event.resumed:
            self.ensure(event.show_progress)

    def on_step_end(self, event):
        if event.synced:
            self.model.weights_changed()  # the item matrix is no longer the weights' own
        refresh = self.refresh_steps * self.accumulation_steps
        if refresh and event.batches % refresh == 0 and event.batches < event.n_batches:
            self.compute()  # item_refresh_steps: the matrix follows the weights inside the epoch


class TimeEstimate(TrainerCallback):
    """Logs once how long training will take, from the mean of ``TIMED_STEPS`` steps after the first (which pays for
    one-off work: allocation, caches)."""

    TIMED_STEPS = 3

    def __init__(self, logger, epochs, item_matrix=None):
        self.logger, self.epochs, self.item_matrix = logger, epochs, item_matrix
        self.done = False
        self.timing = None  # [batches when the clock started, the clock]

    def on_epoch_begin(self, event):
        if not self.done:
            self.timing = [event.batches, None]

    def on_step_end(self, event):
        if self.done or self.timing is None:
            return
        start, clock = self.timing
        if clock is None:  # the first step is done: the clock starts now
            self.timing = [event.batches, time.time()]
            return
        done = event.batches - start
        if done < self.TIMED_STEPS and event.batches < event.n_batches:
            return
        self.log((time.time() - clock) / done, done, event)
        self.done, self.timing = True, None

    def log(self, step, done, event):
        from recbole_cora.plan import duration

        n_batches = event.n_batches
        epochs = max(1, self.epochs - event.epoch)
        epoch_seconds, matrix = step * n_batches, ""
        if self.item_matrix is not None and self.item_matrix.model.item_side_trains and self.item_matrix.seconds is not None:
            # the weights the item matrix is computed with train: every item goes through the LLM again once per
            # epoch (and every item_refresh_steps), which on a large catalogue costs more than the steps themselves
            refresh = int(self.item_matrix.model.item_refresh_steps or 0)
            passes = 1 + ((n_batches - 1) // refresh if refresh else 0)
            seconds = self.item_matrix.seconds
            epoch_seconds += passes * seconds
            matrix = (f" + {duration(passes * seconds)} for {passes} item-matrix pass(es) of "
                      f"{self.item_matrix.model.n_items - 1} items ({duration(seconds)} each, measured)")
        with tqdm.external_write_mode():  # the line goes above the progress bar, not into it
            self.logger.info(
                set_color("time", "yellow") + f": {step:.1f} s a training step (measured over {done}): an epoch of "
                f"{n_batches} steps takes about {duration(step * n_batches)}{matrix}; {epochs} epoch(s) at most "
                f"{duration(epoch_seconds * epochs)} of training, evaluations not counted (each is timed in its log line)"
            )


class LearningCurve(TrainerCallback):
    """After the ``curve_epochs`` epochs, the current weights scored on ``data`` (the pipeline sets the test split;
    not used for any choice: early stopping reads valid), a row added to ``<model file>.curve.jsonl``: epoch,
    training rows seen, this epoch's training seconds, the metrics. ``results``: each point's result as this process
    measured it, which the test pass reuses when the best model is a curve point's weights."""

    def __init__(self, config, model, wrapped, evaluation, evaluator, logger, is_main_process, item_matrix=None):
        self.epochs = {int(e) for e in (config["curve_epochs"] or [])}
        self.model, self.wrapped, self.logger = model, wrapped, logger
        self.evaluation, self.evaluator = evaluation, evaluator  # the trainer's EvaluationLoop and RecBole Evaluator
        self.is_main_process, self.item_matrix = is_main_process, item_matrix
        self.data = None
        self.results = {}

    @staticmethod
    def file_of(model_file):
        return Path(f"{model_file}.curve.jsonl")

    def points(self, model_file):
        """The learning curve's rows so far (a resumed run keeps the ones it had)."""
        path = self.file_of(model_file)
        if not path.is_file():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def on_epoch_end(self, event):
        if self.data is not None and event.epoch + 1 in self.epochs:
            self.point(event)

    def point(self, event):
        epoch = event.epoch + 1
        if any(point["epoch"] == epoch for point in self.points(event.model_file)):
            return  # a resumed run that had measured it already
        self.wrapped.eval()
        if self.item_matrix is not None:
            self.item_matrix.ensure()
        residual = getattr(self.model, "residual", None) is not None
        with torch.no_grad(), self.model.llm_score_alone():  # encoder_residual: its LLM's score (no gate yet)
            result = self.evaluation.evaluate(self.model, self.data, self.evaluator)
        self.wrapped.train()
        if not residual:  # a residual model's test pass uses its fitted gate: not this point's score
            self.results[epoch] = result
        point = {"epoch": epoch, "train_rows": epoch * event.rows, "epoch_train_seconds": round(event.seconds, 1),
                 **({"score": "LLM score alone"} if residual else {}), **plain_result(result)}
        self.logger.info(set_color("curve", "yellow") + f": after {point['train_rows']} training rows {result}")
        if self.is_main_process:
            with open(self.file_of(event.model_file), "a") as f:
                f.write(json.dumps(point) + "\n")
