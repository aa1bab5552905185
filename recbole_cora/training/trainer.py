"""``LLMTrainer``: RecBole's Trainer for the LLM recommenders of every task, run by accelerate.

* one code path for 1 CPU, 1 GPU and N processes: ``Accelerator`` prepares the model, optimizer and a plain
  DataLoader over row indices (``training.sampling``); the loss goes through the wrapped module's forward;
* AdamW on the trainable parameters only, linear warm-up then cosine decay, clipping, gradient accumulation and
  mixed precision (``mixed_precision``);
* evaluation by ``training.evaluation.EvaluationLoop``; the learning curve, the time estimate and Laser's item
  matrix are callbacks (``training.callbacks``); the resume state is ``training.resume``'s;
* checkpoints hold only the trainable parameters (safetensors) and the config (JSON): loading the best model never
  unpickles anything.
"""

import os
import time
from pathlib import Path

import torch
from recbole.trainer import Trainer
from recbole.utils import set_color
from tqdm import tqdm

from recbole_cora import checkpoint as ckpt
from recbole_cora.model.abstract_llm_recommender import place_model
from recbole_cora.model.next_item_llm_recommender import NextItemLLMRecommender
from recbole_cora.tasks.labeled import row_scores
from recbole_cora.training.callbacks import ItemMatrix, LearningCurve, TimeEstimate, TrainEvent
from recbole_cora.training.evaluation import EvaluationLoop
from recbole_cora.training.resume import ResumableMixin, ResumeStore
from recbole_cora.training.sampling import build_scheduler, epoch_rows, length_bucketed, prompt_lengths, row_loader


class LLMTrainer(ResumableMixin, Trainer):
    def __init__(self, config, model):
        from accelerate import Accelerator
        from accelerate.utils import DataLoaderConfiguration, broadcast_object_list

        self.accelerator = Accelerator(
            cpu=not torch.cuda.is_available(),
            mixed_precision=config["mixed_precision"] or "no",
            gradient_accumulation_steps=int(config["gradient_accumulation_steps"] or 1),
            # the global batch is train_batch_size whatever the number of processes (it must divide it)
            dataloader_config=DataLoaderConfiguration(split_batches=True),
        )
        n = self.accelerator.num_processes
        if config["train_batch_size"] % n:
            raise ValueError(f"train_batch_size {config['train_batch_size']} must divide by the {n} processes.")
        config["device"] = self.accelerator.device
        model = place_model(model, self.accelerator.device)  # under device_map the LLM stays where it was put
        super().__init__(config, model)
        self.scheduler = None
        self.epoch_rows_trained = 0
        self._saved_epoch = None  # the epochs trained by the weights in saved_model_file (saved by this process)
        self._pending_scheduler = self._resume_position = self._resume_rng = None
        self._resumed = self._resumed_finished = False
        self._fingerprint = self._resumed_fingerprint = None
        if self.optimizer is None:  # nothing trains (ZeroShot): the model is only evaluated
            self.wrapped = model if config["device_map"] else self.accelerator.prepare(model)
        elif config["device_map"]:  # the LLM is already placed (sharded) by transformers: no DDP wrapper
            self.wrapped, self.optimizer = model, self.accelerator.prepare(self.optimizer)
        else:  # one prepare call for both, as DeepSpeed (an accelerate config) requires
            self.wrapped, self.optimizer = self.accelerator.prepare(model, self.optimizer)
        # a folder (trainable.safetensors + config.json), named by the main process for all of them
        self.saved_model_file = broadcast_object_list([os.path.splitext(self.saved_model_file)[0]])[0]
        self.evaluation = EvaluationLoop(self.accelerator, config, model)
        self.resume_store = ResumeStore(self.accelerator)
        accumulation = self.accelerator.gradient_accumulation_steps
        self.item_matrix = ItemMatrix(model, self.evaluation, self.logger, accumulation) \
            if isinstance(model, NextItemLLMRecommender) else None  # its head ranks every item by an item matrix
        self.time_estimate = TimeEstimate(self.logger, self.epochs, self.item_matrix)
        self.curve = LearningCurve(config, model, self.wrapped, self.evaluation, self.evaluator, self.logger,
                                   self.accelerator.is_main_process, self.item_matrix)
        self.callbacks = [self.time_estimate, *([self.item_matrix] if self.item_matrix else []), self.curve]
        self.logger.info(
            f"LLM trainer: {self.accelerator.num_processes} process(es) on {self.accelerator.device}; "
            f"{sum(p.numel() for p in self.trainable_parameters()):,} trainable parameters"
        )

    # ---------------------------------------------------------------- optimisation
    def trainable_parameters(self):
        return [p for p in self.model.parameters() if p.requires_grad]

    def _build_optimizer(self, **kwargs):
        groups = [group for group in self.model.parameter_groups() if group["params"]]  # e.g. the answer head's own lr
        return super()._build_optimizer(params=groups) if groups else None

    def build_scheduler(self, steps_per_epoch):
        """The learning-rate schedule of this trainer's epochs (``training.sampling.build_scheduler``)."""
        return build_scheduler(self.optimizer, self.config, self.learning_rate, steps_per_epoch * self.epochs)

    def train_rows(self, train_data, epoch_idx):
        """The rows of epoch ``epoch_idx`` (``training.sampling.epoch_rows``)."""
        return epoch_rows(self.config, self.model.train_row_subset, len(train_data._dataset), epoch_idx)

    def epoch_order(self, train_data, rows, epoch_idx):
        """(``rows`` in the order they are trained, whether that order is the sampling): with ``length_bucketing:
        train_and_eval`` batches of like prompt lengths, else as they are (the loader shuffles them)."""
        if self.config["length_bucketing"] == "train_and_eval" and prompt_lengths(self.model, train_data, [0]) is not None:
            lengths = prompt_lengths(self.model, train_data, rows)
            return length_bucketed(rows, lengths, self.config["train_batch_size"], self.config["seed"], epoch_idx), True
        return rows, False

    def _train_epoch(self, train_data, epoch_idx, loss_func=None, show_progress=False):
        start = time.time()
        loss = self.train_one_epoch(train_data, epoch_idx, show_progress)
        event = TrainEvent(epoch=epoch_idx, rows=self.epoch_rows_trained,
                           seconds=time.time() - start, model_file=str(self.saved_model_file))
        for callback in self.callbacks:
            callback.on_epoch_end(event)
        return loss

    def _start_schedule(self, n_batches):
        if self.scheduler is None:
            self.scheduler = self.build_scheduler(n_batches // self.accelerator.gradient_accumulation_steps or 1)
        if self._pending_scheduler is not None:  # resumed: the schedule goes on where it was
            self.scheduler.load_state_dict(self._pending_scheduler)
            self._pending_scheduler = None
            # building the scheduler set the learning rate to the schedule's first value: put back the current one
            for group, lr in zip(self.optimizer.param_groups, self.scheduler.get_last_lr()):
                group["lr"] = lr

    def train_one_epoch(self, train_data, epoch_idx, show_progress=False):
        """One epoch's training steps (from where a resume state left it); returns the mean loss."""
        rows = self.train_rows(train_data, epoch_idx)
        self.epoch_rows_trained = len(rows)  # the epoch's rows, for the callbacks (TrainEvent.rows)
        self.model.before_epoch(epoch_idx)
        rows, ordered = self.epoch_order(train_data, rows, epoch_idx)
        loader = self.accelerator.prepare(row_loader(train_data, rows, self.config["train_batch_size"],
                                                     shuffle=not ordered, seed=self.config["seed"], epoch=epoch_idx))
        n_batches = len(loader)
        self._start_schedule(n_batches)
        total, batches = 0.0, 0
        resumed = self._resume_position if self._resume_position and self._resume_position[0] == epoch_idx else None
        if resumed:  # continue a killed run exactly where its last checkpoint left this epoch
            from accelerate import skip_first_batches

            _, batches, total = resumed
            loader = skip_first_batches(loader, batches)
        self._resume_position = None
        event = TrainEvent(epoch=epoch_idx, batches=batches, n_batches=n_batches, resumed=bool(resumed),
                           show_progress=show_progress)
        for callback in self.callbacks:
            callback.on_epoch_begin(event)
        self.wrapped.train()
        iterator = iter(loader)  # the saved RNG state goes back in once the iterator exists, right before batch 1
        if resumed and self._resume_rng is not None:
            ckpt.restore_rng(*self._resume_rng)
            self._resume_rng = None
        every = int(self.config["checkpoint_steps"] or 0) * self.accelerator.gradient_accumulation_steps
        progress = tqdm(iterator, total=n_batches, initial=batches, ncols=100,
                        desc=set_color(f"Train {epoch_idx:>5}", "pink"),
                        disable=not show_progress or not self.accelerator.is_main_process)
        for interaction in progress:
            with self.accelerator.accumulate(self.wrapped):
                loss = self.wrapped(interaction, return_loss=True)
                self._check_nan(loss)
                self.accelerator.backward(loss)
                self.model.release_adaptation()  # kept open for gradient checkpointing's recomputation
                if self.clip_grad_norm and self.accelerator.sync_gradients:
                    self.accelerator.clip_grad_norm_(self.trainable_parameters(), **self.clip_grad_norm)
                self.optimizer.step()
                if self.accelerator.sync_gradients:
                    self.scheduler.step()
                self.optimizer.zero_grad()
            total += loss.item()
            batches += 1
            event.batches, event.synced = batches, self.accelerator.sync_gradients
            for callback in self.callbacks:
                callback.on_step_end(event)
            if show_progress:
                progress.set_postfix_str(f"loss {total / batches:.4f}")
            if every and batches % every == 0 and batches < n_batches:
                self.save_resume_state(epoch_idx, batches, total)
        if n_batches:
            self.save_resume_state(epoch_idx, batches, total)  # the epoch's training is done; validation is next
        self.evaluation.save_prompt_caches()
        return total / max(batches, 1)

    def fit(self, train_data, valid_data=None, verbose=True, saved=True, show_progress=False, callback_fn=None):
        """RecBole's fit, with a resume state saved after every epoch's validation and at the end."""
        self._fingerprint = getattr(train_data._dataset, "fingerprint", None)
        if self._resumed and self._resumed_fingerprint != self._fingerprint:
            raise ckpt.CheckpointError(
                f"the resume state of '{self.saved_model_file}' was made on another split of the data (fingerprint "
                f"{self._resumed_fingerprint}, this run's is {self._fingerprint}): the data files changed. Restore "
                "them, or start a new run without --resume."
            )
        if self.optimizer is None:  # nothing to train (ZeroShot): one evaluation of valid, nothing saved
            if valid_data:
                self.best_valid_score, self.best_valid_result = self._valid_epoch(valid_data, show_progress)
                self.logger.info(set_color("valid result", "blue") + f": \n{self.best_valid_result}")
            return self.best_valid_score, self.best_valid_result
        if self._resumed_finished or (self._resumed and self.start_epoch >= self.epochs):
            # this run (or this step of it) had finished training before it was stopped: RecBole's fit would
            # now overwrite the best model with the last weights
            self.logger.info(f"Resume: training had finished; best valid score {self.best_valid_score}")
            return self.best_valid_score, self.best_valid_result

        def after_validation(epoch_idx, valid_score):
            stopping = self.cur_step > self.stopping_step  # RecBole's early_stopping is about to stop
            self.save_resume_state(epoch_idx + 1, 0, 0.0, finished=stopping)
            if callback_fn:
                callback_fn(epoch_idx, valid_score)

        result = super().fit(train_data, valid_data, verbose, saved, show_progress, callback_fn=after_validation)
        self.save_resume_state(self.epochs, 0, 0.0, finished=True)
        return result

    # ---------------------------------------------------------------- evaluation
    @property
    def curve_data(self):
        """The split the learning curve scores after each of the ``curve_epochs`` (None: no curve)."""
        return self.curve.data

    @curve_data.setter
    def curve_data(self, data):
        self.curve.data = data

    def curve_points(self):
        return self.curve.points(self.saved_model_file)

    def eval_rows(self, eval_data):
        return self.evaluation.rows(eval_data)

    def _valid_epoch(self, valid_data, show_progress=False):
        """RecBole's validation. A model with ``encoder_residual`` is validated by its LLM's score alone (its
        paper's): its gate is fitted after training, and until then the fused score is the encoder's, the same at
        every epoch, so early stopping and the best model would read nothing the LLM learned."""
        with self.model.llm_score_alone():
            return super()._valid_epoch(valid_data, show_progress)

    @torch.no_grad()
    def evaluate(self, eval_data, load_best_model=True, model_file=None, show_progress=False):
        if not eval_data:
            return None
        reused = self.curve.results.get(self._saved_epoch)
        if load_best_model and model_file is None and eval_data is self.curve.data and reused is not None:
            # the best model is the weights of a curve point, already scored on these rows: not scored again
            # (a curve that ends at the last epoch, with valid once at the end or none, saves one whole pass)
            self.load_best_model()
            self.logger.info(f"test result: the curve point after epoch {self._saved_epoch} (the same weights on the "
                             "same rows), not scored again")
            return type(reused)(reused)
        if load_best_model:
            self.load_best_model(model_file)
        self.model.eval()
        if self.item_matrix is not None:
            self.item_matrix.ensure(show_progress)
        return self.evaluate_model(self.model, eval_data, show_progress)

    def evaluate_model(self, model, eval_data, show_progress=False, answers=True):
        """``model``'s metrics on this trainer's evaluation rows (labeled) or users (next-item, candidates): the LLM
        model, or a frozen encoder scored beside it on the same rows (``answers``: False skips greedy answers)."""
        return self.evaluation.evaluate(model, eval_data, self.evaluator, show_progress, answers)

    def compute_item_matrix(self, show_progress=False):
        """Laser's item matrix with the current weights (``callbacks.ItemMatrix``)."""
        self.item_matrix.compute(show_progress)

    def score_rows(self, model, eval_data, show_progress=False, rows=None):
        """``model.predict`` on this trainer's evaluation rows of ``eval_data`` (``rows``: these), as a RecBole
        DataStruct (``tasks.labeled.row_scores``)."""
        return row_scores(self.evaluation, model, eval_data, show_progress, rows)

    @torch.inference_mode()
    def fit_residual_gate(self, valid_data, show_progress=False):
        """``encoder_residual``: the gate g of score = encoder + g x LLM fitted on this trainer's valid users (every
        item, or their candidate lists), the g minimising the cross-entropy of their targets
        (``EncoderResidual.best_gate``); users split between processes, gathered once, g the same everywhere.
        Returns (g, valid loss at g = 0, at g)."""
        from recbole_cora.model.layers import EncoderResidual

        self.model.eval()
        if self.item_matrix is not None:
            self.item_matrix.ensure(show_progress)
        encoder, llm, target = self.evaluation.residual_parts(self.model, valid_data, show_progress)
        gate, before, after = EncoderResidual.best_gate(encoder, llm, target)
        self.model.residual.gate.fill_(gate)
        self.logger.info(set_color("encoder residual", "yellow") + f": gate g = {gate:.4f} fitted on "
                         f"{len(self.eval_rows(valid_data))} valid users (their cross-entropy {before:.4f} with the "
                         f"encoder alone, {after:.4f} with g"
                         + ("" if gate else ": the LLM's score adds nothing significant there, the encoder ranks") + ")")
        self.curve.results.clear()  # a curve point's weights scored with another gate are not this model
        return gate, before, after

    # ---------------------------------------------------------------- checkpoints
    def _save_checkpoint(self, epoch, verbose=True, **kwargs):
        folder = Path(kwargs.pop("saved_model_file", self.saved_model_file))
        if folder == Path(self.saved_model_file):  # known to every process, so that all of them skip a test pass
            self._saved_epoch = epoch + 1  # RecBole passes the 0-based epoch index
        if not self.accelerator.is_main_process:
            return
        ckpt.save_trainable(self.model, folder, self.config, {"epoch": epoch, "best_valid_score": self.best_valid_score},
                            fingerprint=self._fingerprint)
        if verbose:
            self.logger.info(set_color("Saving current", "blue") + f": {folder}")

    def save_best_model(self):
        """Save the current weights as the best model, under the epoch the best model had (the encoder residual's
        gate, fitted after training, goes into the saved model this way)."""
        self._save_checkpoint(max(0, (self._saved_epoch or 1) - 1), verbose=False)

    def load_best_model(self, model_file=None):
        if self.optimizer is None:  # nothing was trained, nothing saved
            return
        self.accelerator.wait_for_everyone()  # the main process may still be writing it
        folder = Path(model_file or self.saved_model_file)
        ckpt.load_trainable(self.model, folder)
        self.logger.info(f"Loading trainable parameters from {folder}")
