"""Trainers: RecBole's own, with the task's evaluation (labeled all/warm/cold, or ranking with the user's earlier
items masked) and safe checkpoints mixed in; ``LLMTrainer`` for the LLM models of both tasks.

``get_trainer`` (in ``recbole_cora.utils``) wraps whichever RecBole trainer a model would get
(``Trainer``, ``KGTrainer``, ...) with these mixins, so RecBole baselines and plugin models are
trained and evaluated by the same code on the same split.
"""

import functools
import json
import math
import os
import shutil
import time
from pathlib import Path

import torch
from recbole.data.dataloader import FullSortEvalDataLoader
from recbole.evaluator.collector import DataStruct
from recbole.trainer import Trainer
from recbole.utils import InputType, set_color
from tqdm import tqdm

from recbole_cora import checkpoint as ckpt
from recbole_cora.checkpoint import load_trainable, save_trainable  # noqa: F401 (re-exported)
from recbole_cora.compat import atomic_torch_save
from recbole_cora.recbole_files import read_recbole_model, write_recbole_model
from recbole_cora.data.candidates import answer_metrics, candidate_lists, pair_scores, ranking_struct, target_positions
from recbole_cora.evaluator import LabeledCollector, evaluate_groups, subset_struct
from recbole_cora.model.abstract_llm_recommender import NextItemLLMRecommender, place_model


def eval_row_subset(n, config):
    """The evaluation rows (indices into a valid/test split): all, or ``eval_rows`` of them drawn once
    with the run's seed. Every model of a comparison is scored on the same rows."""
    sample = config["eval_rows"]
    if sample and sample < n:
        generator = torch.Generator().manual_seed(int(config["seed"]))
        return sorted(torch.randperm(n, generator=generator)[: int(sample)].tolist())
    return list(range(n))


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
        rows = eval_row_subset(len(eval_data._dataset), self.config)
        if len(rows) < len(eval_data._dataset):  # the loader keeps the split's row order
            struct = subset_struct(struct, torch.tensor(rows))
        result = evaluate_groups(self.evaluator, struct)
        self.wandblogger.log_eval_metrics(result, head="eval")
        return result


class RankingEvaluationMixin(CheckpointMixin):
    """RecBole's full-ranking evaluation, with the user's earlier items masked when ``mask_history`` is set (RecBole's
    sequential evaluation ranks them too; its general models' evaluation already masks them), on the same
    ``eval_rows`` users as the LLM models (RecBole's loaders list a split's users in ascending id order), and with
    the number of users evaluated in the result (``users``)."""

    @torch.no_grad()
    def evaluate(self, eval_data, load_best_model=True, model_file=None, show_progress=False):
        if not eval_data:
            return None
        n = len(eval_data._dataset) if eval_data.is_sequential else len(eval_data.uid_list)
        rows = eval_row_subset(n, self.config)
        evaluator = self.evaluator
        if len(rows) < n:
            self.evaluator = RowSubsetEvaluator(evaluator, rows)
        try:
            result = super().evaluate(eval_data, load_best_model, model_file, show_progress)
        finally:
            self.evaluator = evaluator
        result["users"] = len(rows)
        return result

    def _full_sort_batch_eval(self, batched_data):
        interaction, scores, positive_u, positive_i = super()._full_sort_batch_eval(batched_data)
        if self.config["mask_history"]:
            mask_history(scores, interaction, self.config)
        return interaction, scores, positive_u, positive_i


class CandidateEvaluationMixin(CheckpointMixin):
    """``task: candidates`` for RecBole's models: every evaluation user (the ``eval_rows`` users of the split) ranks its
    fixed candidate list (``recbole_cora.data.candidates``) by the model's ``full_sort_predict`` scores; RecBole's
    evaluator gives Hit and NDCG at each k over the list, with the number of users (``users``)."""

    @torch.no_grad()
    def evaluate(self, eval_data, load_best_model=True, model_file=None, show_progress=False):
        if not eval_data:
            return None
        if load_best_model:
            self.load_best_model(model_file)
        self.model.eval()
        part = eval_data._dataset
        lists = candidate_lists(self.config, part)
        scores, start = [], 0
        batches = tqdm(eval_data, total=len(eval_data), ncols=100, desc=set_color("Evaluate   ", "pink"),
                       disable=not show_progress)
        for batched_data in batches:
            interaction = batched_data[0].to(self.device)
            mine = lists[start: start + len(interaction)]
            scores.append(candidate_scores(self.model, interaction, mine.to(self.device), self.config["eval_batch_size"])
                          .float().cpu())
            start += len(interaction)
        rows = torch.as_tensor(eval_row_subset(len(part), self.config))
        positions = target_positions(lists, part.inter_feat[part.iid_field])
        struct = ranking_struct(torch.cat(scores)[rows], positions[rows], max(self.config["topk"]))
        result = self.evaluator.evaluate(struct)
        result["users"] = len(rows)
        return result


def candidate_scores(model, interaction, lists, batch_size=None):
    """(rows, candidates) scores of each row's candidate list: the model's own ``candidate_scores`` (RSLLM's title
    likelihood), else its full ranking's scores at the listed items (RecBole's models, Laser, a frozen encoder), else,
    for a RecBole model without a full ranking (DIN, DIEN: CTR models), its ``predict`` of each (row, candidate)
    pair, ``batch_size`` pairs at a time."""
    from recbole.model.abstract_recommender import AbstractRecommender

    if hasattr(model, "candidate_scores"):
        return model.candidate_scores(interaction, lists)
    if type(model).full_sort_predict is AbstractRecommender.full_sort_predict:
        return pair_scores(model.predict, interaction, lists, model.ITEM_ID, batch_size)
    scores = model.full_sort_predict(interaction).view(len(interaction), -1)
    return scores.gather(1, lists.to(scores.device))


class RowSubsetEvaluator:
    """RecBole's Evaluator on some rows of the collected data only (the users of ``eval_rows``)."""

    def __init__(self, evaluator, rows):
        self.evaluator, self.rows = evaluator, torch.as_tensor(rows)

    def evaluate(self, struct):
        return self.evaluator.evaluate(subset_struct(struct, self.rows))


def mask_history(scores, interaction, config):
    """Set to -inf, in place, the scores of the items in each row's ID history (``item_id_list``), if it has one."""
    field = config["ITEM_ID_FIELD"] + config["LIST_SUFFIX"]
    if field in interaction:
        history = interaction[field].to(scores.device)
        rows = torch.arange(len(history), device=scores.device).unsqueeze(1).expand_as(history)
        real = history > 0
        scores[rows[real], history[real]] = -float("inf")
    return scores


@functools.lru_cache(maxsize=None)
def with_mixin(mixin, base):
    """``base`` (a RecBole trainer class) with ``mixin`` in front of it, made once per pair."""
    return type(f"{mixin.__name__.replace('Mixin', '')}{base.__name__}", (mixin, base), {})


class LLMTrainer(LabeledEvaluationMixin, Trainer):
    """RecBole's Trainer for LLM recommenders, run by accelerate.

    * one code path for 1 CPU, 1 GPU and N processes: ``Accelerator`` prepares the model, optimizer and a
      plain DataLoader over row indices whose collate_fn is RecBole's (``accelerator.prepare`` cannot take
      RecBole's loaders: it remaps their ``.dataset``); the loss goes through the wrapped module's forward;
    * AdamW on the trainable parameters only, linear warm-up then cosine decay, clipping, gradient
      accumulation and mixed precision (``mixed_precision``);
    * evaluation splits row indices between processes (no padded duplicates) and gathers (row, score,
      label, user, warm) once into every process, so all of them see the same metrics (early stopping);
    * checkpoints hold only the trainable parameters (safetensors) and the config (JSON): loading the
      best model never unpickles anything.
    """

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
        self.task = config["task"]
        self.next_item = isinstance(model, NextItemLLMRecommender)  # its head ranks every item by an item matrix
        # learning curve: after these epochs' training, the current weights are scored on `curve_data` (the
        # pipeline sets the test split) and a row is added to `curve_file`; none by default
        self.curve_epochs = {int(e) for e in (config["curve_epochs"] or [])}
        self.curve_data = None
        self._curve_results = {}  # epoch -> its curve point's result, as this process measured it
        self._saved_epoch = None  # the epochs trained by the weights in saved_model_file (saved by this process)
        self.scheduler = None
        self._pending_scheduler = self._resume_position = self._resume_rng = None
        self._resumed = self._resumed_finished = False
        self._fingerprint = self._resumed_fingerprint = None
        self._matrix_seconds = None  # the last item-matrix pass (Laser), counted by the time estimate
        self._timed = False  # the time estimate is logged once, from the first training steps of this trainer
        if self.optimizer is None:  # nothing trains (ZeroShot): the model is only evaluated
            self.wrapped = model if config["device_map"] else self.accelerator.prepare(model)
        elif config["device_map"]:  # the LLM is already placed (sharded) by transformers: no DDP wrapper
            self.wrapped, self.optimizer = model, self.accelerator.prepare(self.optimizer)
        else:  # one prepare call for both, as DeepSpeed (an accelerate config) requires
            self.wrapped, self.optimizer = self.accelerator.prepare(model, self.optimizer)
        # a folder (trainable.safetensors + config.json), named by the main process for all of them
        self.saved_model_file = broadcast_object_list([os.path.splitext(self.saved_model_file)[0]])[0]
        self.logger.info(
            f"LLM trainer: {self.accelerator.num_processes} process(es) on {self.accelerator.device}; "
            f"{sum(p.numel() for p in self._trainable()):,} trainable parameters"
        )

    # ---------------------------------------------------------------- optimisation
    def _trainable(self):
        return [p for p in self.model.parameters() if p.requires_grad]

    def _build_optimizer(self, **kwargs):
        trainable = self._trainable()
        return super()._build_optimizer(params=trainable) if trainable else None

    def _build_scheduler(self, steps_per_epoch):
        """Linear warm-up from ``warmup_start_lr`` to ``learning_rate`` over ``warmup_ratio`` of the planned steps,
        then cosine decay to ``min_learning_rate`` (CoRA's code: 200 steps from 1e-5, cosine to 8e-5). The first
        step trains at ``warmup_start_lr``: transformers' cosine schedule starts the warm-up at 0, which on the
        embedded default's 32 steps spent step 1 on nothing (and left the query generator without a gradient at
        step 2 too, P being still 0; benchmarks/QUALITY.md)."""
        total = max(1, steps_per_epoch * self.epochs)
        warmup = int(round(float(self.config["warmup_ratio"] or 0.0) * total))
        peak = float(self.learning_rate)
        start = min(1.0, float(self.config["warmup_start_lr"] or 0.0) / peak) if peak > 0 else 1.0
        floor = min(1.0, float(self.config["min_learning_rate"] or 0.0) / peak) if peak > 0 else 0.0
        return torch.optim.lr_scheduler.LambdaLR(self.optimizer, functools.partial(
            warmup_cosine, warmup=warmup, total=total, start=start, floor=floor))

    def _prompt_lengths(self, data, rows):
        """Token counts of the rows' prompts (tokenized once, then cached), or None for a model without prompts."""
        if not rows:
            return None
        return self.model.prompt_lengths(data._dataset.inter_feat[torch.as_tensor(rows)])

    def _bucketed(self, data, rows, batch_size, epoch):
        """``rows`` reordered so that each batch holds prompts of similar length (less padding): chunks of 50
        batches of the shuffled rows are sorted by length and cut into batches, whose order is shuffled."""
        lengths = self._prompt_lengths(data, rows)
        generator = torch.Generator().manual_seed(int(self.config["seed"]) * 7919 + epoch)
        order = torch.randperm(len(rows), generator=generator).tolist()
        chunk = 50 * batch_size
        batches = []
        for start in range(0, len(order), chunk):
            part = sorted(order[start: start + chunk], key=lambda k: lengths[k])
            batches += [part[b: b + batch_size] for b in range(0, len(part), batch_size)]
        batches = [batch for batch in batches if len(batch) == batch_size]  # as drop_last
        shuffled = [batches[k] for k in torch.randperm(len(batches), generator=generator).tolist()]
        return [rows[k] for batch in shuffled for k in batch]

    def _row_loader(self, data, rows, batch_size, shuffle, epoch=0):
        from torch.utils.data import DataLoader, RandomSampler

        generator = torch.Generator().manual_seed(int(self.config["seed"]) + epoch)
        sampler = RandomSampler(rows, generator=generator) if shuffle else None
        # The loader's own generator: starting an iterator then draws its seed from it, not from the global RNG
        # (which dropout uses), so a resumed run's RNG stream is the uninterrupted run's.
        return DataLoader(
            rows, batch_size=batch_size, sampler=sampler, drop_last=shuffle and len(rows) >= batch_size,
            collate_fn=lambda idx: _first(data.collate_fn(idx)),
            generator=torch.Generator().manual_seed(int(self.config["seed"]) + epoch),
        )

    def _train_rows(self, train_data, epoch_idx):
        """The rows of this epoch: the model's fixed subset if it has one (RecLoRA's Few2Many) or all rows,
        of which ``train_rows_per_epoch`` are drawn anew each epoch."""
        subset = self.model.train_row_subset
        rows = list(subset) if subset is not None else list(range(len(train_data._dataset)))
        sample = self.config["train_rows_per_epoch"]
        if sample and sample < len(rows):
            generator = torch.Generator().manual_seed(int(self.config["seed"]) * 1000 + epoch_idx)
            return [rows[i] for i in torch.randperm(len(rows), generator=generator)[: int(sample)].tolist()]
        return rows

    def _train_epoch(self, train_data, epoch_idx, loss_func=None, show_progress=False):
        start = time.time()
        loss = self._train_rows_of_epoch(train_data, epoch_idx, show_progress)
        if self.curve_data is not None and epoch_idx + 1 in self.curve_epochs:
            self._curve_point(epoch_idx, len(self._train_rows(train_data, epoch_idx)), time.time() - start)
        return loss

    @property
    def curve_file(self):
        return Path(f"{self.saved_model_file}.curve.jsonl")

    def curve_points(self):
        """The learning curve's rows so far (a resumed run keeps the ones it had)."""
        if not self.curve_file.is_file():
            return []
        return [json.loads(line) for line in self.curve_file.read_text().splitlines() if line.strip()]

    def _curve_point(self, epoch_idx, rows_per_epoch, seconds):
        """Score the current weights on ``curve_data`` (not used for any choice: early stopping reads valid) and
        add a row: epoch, training rows seen, this epoch's training seconds, the metrics."""
        if any(point["epoch"] == epoch_idx + 1 for point in self.curve_points()):
            return  # a resumed run that had measured it already
        self.wrapped.eval()
        if self.next_item and not self.model.has_item_matrix:
            self.compute_item_matrix()
        residual = getattr(self.model, "residual", None) is not None
        with torch.no_grad(), self.model.llm_score_alone():  # encoder_residual: its LLM's score (no gate yet)
            result = self.evaluate_model(self.model, self.curve_data, show_progress=False)
        self.wrapped.train()
        if not residual:  # a residual model's test pass uses its fitted gate: not this point's score
            self._curve_results[epoch_idx + 1] = result
        point = {"epoch": epoch_idx + 1, "train_rows": (epoch_idx + 1) * rows_per_epoch,
                 "epoch_train_seconds": round(seconds, 1), **({"score": "LLM score alone"} if residual else {}),
                 **_plain_result(result)}
        self.logger.info(set_color("curve", "yellow") + f": after {point['train_rows']} training rows {result}")
        if self.accelerator.is_main_process:
            with open(self.curve_file, "a") as f:
                f.write(json.dumps(point) + "\n")

    def _train_rows_of_epoch(self, train_data, epoch_idx, show_progress=False):
        rows = self._train_rows(train_data, epoch_idx)
        batch_size = self.config["train_batch_size"]
        self.model.before_epoch(epoch_idx)
        bucketing = self.config["length_bucketing"] == "train_and_eval" and self._prompt_lengths(train_data, [0]) is not None
        if bucketing:  # the order is the sampling: the loader keeps it
            rows = self._bucketed(train_data, rows, batch_size, epoch_idx)
        loader = self.accelerator.prepare(
            self._row_loader(train_data, rows, batch_size, shuffle=not bucketing, epoch=epoch_idx)
        )
        n_batches = len(loader)
        if self.scheduler is None:
            steps = n_batches // self.accelerator.gradient_accumulation_steps or 1
            self.scheduler = self._build_scheduler(steps)
        total, batches = 0.0, 0
        if self._pending_scheduler is not None:  # resumed: the schedule goes on where it was
            self.scheduler.load_state_dict(self._pending_scheduler)
            self._pending_scheduler = None
            # building the scheduler set the learning rate to the schedule's first value: put back the current one
            for group, lr in zip(self.optimizer.param_groups, self.scheduler.get_last_lr()):
                group["lr"] = lr
        resumed = self._resume_position if self._resume_position and self._resume_position[0] == epoch_idx else None
        # Laser's stage 1: every item's vector with the weights of this epoch's start, unless the matrix already is
        # theirs (an evaluation recomputed it; a run resumed inside the epoch has its matrix back from its resume state)
        if self.next_item and not resumed and not self.model.has_item_matrix:
            self.compute_item_matrix(show_progress)
        refresh = self.model.item_refresh_steps if self.next_item and self.model.item_side_trains else 0
        if resumed:  # continue a killed run exactly where its last checkpoint left this epoch
            from accelerate import skip_first_batches

            _, batches, total = resumed
            loader = skip_first_batches(loader, batches)
        self._resume_position = None
        self.wrapped.train()
        iterator = iter(loader)  # the saved RNG state goes back in once the iterator exists, right before batch 1
        if resumed and self._resume_rng is not None:
            ckpt.restore_rng(*self._resume_rng)
            self._resume_rng = None
        every = int(self.config["checkpoint_steps"] or 0) * self.accelerator.gradient_accumulation_steps
        progress = tqdm(iterator, total=n_batches, initial=batches, ncols=100,
                        desc=set_color(f"Train {epoch_idx:>5}", "pink"),
                        disable=not show_progress or not self.accelerator.is_main_process)
        timing = None if self._timed else [batches, None]  # batches done and the clock when the timed steps begin
        for interaction in progress:
            with self.accelerator.accumulate(self.wrapped):
                loss = self.wrapped(interaction, return_loss=True)
                self._check_nan(loss)
                self.accelerator.backward(loss)
                self.model.release_adaptation()  # kept open for gradient checkpointing's recomputation
                if self.clip_grad_norm and self.accelerator.sync_gradients:
                    self.accelerator.clip_grad_norm_(self._trainable(), **self.clip_grad_norm)
                self.optimizer.step()
                if self.accelerator.sync_gradients:
                    self.scheduler.step()
                self.optimizer.zero_grad()
            if self.next_item and self.accelerator.sync_gradients:
                self.model.weights_changed()  # the item matrix is no longer the weights' own
            total += loss.item()
            batches += 1
            if timing is not None:
                timing = self._time_steps(timing, batches, n_batches, epoch_idx)
            if show_progress:
                progress.set_postfix_str(f"loss {total / batches:.4f}")
            if refresh and batches % (refresh * self.accelerator.gradient_accumulation_steps) == 0 and batches < n_batches:
                self.compute_item_matrix()  # item_refresh_steps: the matrix follows the weights inside the epoch
            if every and batches % every == 0 and batches < n_batches:
                self.save_resume_state(epoch_idx, batches, total)
        if n_batches:
            self.save_resume_state(epoch_idx, batches, total)  # the epoch's training is done; validation is next
        self._save_prompt_caches()
        return total / max(batches, 1)

    TIMED_STEPS = 3  # the estimate's steps, after a first one that pays for one-off work (allocation, caches)

    def _time_steps(self, timing, batches, n_batches, epoch_idx):
        """Log once how long training will take, from the mean of ``TIMED_STEPS`` steps after the first."""
        start, clock = timing
        if clock is None:  # the first step is done: the clock starts now
            return [batches, time.time()]
        done = batches - start
        if done < self.TIMED_STEPS and batches < n_batches:
            return timing
        from recbole_cora.plan import duration

        step = (time.time() - clock) / done
        epochs = max(1, self.epochs - epoch_idx)
        epoch_seconds, matrix = step * n_batches, ""
        if self.next_item and self.model.item_side_trains and self._matrix_seconds is not None:
            # the weights the item matrix is computed with train: every item goes through the LLM again once per
            # epoch (and every item_refresh_steps), which on a large catalogue costs more than the steps themselves
            refresh = int(self.model.item_refresh_steps or 0)
            passes = 1 + ((n_batches - 1) // refresh if refresh else 0)
            epoch_seconds += passes * self._matrix_seconds
            matrix = (f" + {duration(passes * self._matrix_seconds)} for {passes} item-matrix pass(es) of "
                      f"{self.model.n_items - 1} items ({duration(self._matrix_seconds)} each, measured)")
        with tqdm.external_write_mode():  # the line goes above the progress bar, not into it
            self.logger.info(
                set_color("time", "yellow") + f": {step:.1f} s a training step (measured over {done}): an epoch of "
                f"{n_batches} steps takes about {duration(step * n_batches)}{matrix}; {epochs} epoch(s) at most "
                f"{duration(epoch_seconds * epochs)} of training, evaluations not counted (each is timed in its log line)"
            )
        self._timed = True
        return None

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
    def _valid_epoch(self, valid_data, show_progress=False):
        """RecBole's validation. A model with ``encoder_residual`` is validated by its LLM's score alone (its
        paper's): its gate is fitted after training, and until then the fused score is the encoder's, the same at
        every epoch, so early stopping and the best model would read nothing the LLM learned."""
        with self.model.llm_score_alone():
            return super()._valid_epoch(valid_data, show_progress)

    def _eval_rows(self, eval_data):
        return eval_row_subset(len(eval_data._dataset), self.config)

    @torch.no_grad()
    def evaluate(self, eval_data, load_best_model=True, model_file=None, show_progress=False):
        if not eval_data:
            return None
        if load_best_model and model_file is None and eval_data is self.curve_data and self._saved_epoch in self._curve_results:
            # the best model is the weights of a curve point, already scored on these rows: not scored again
            # (a curve that ends at the last epoch, with valid once at the end or none, saves one whole pass)
            self.load_best_model()
            self.logger.info(f"test result: the curve point after epoch {self._saved_epoch} (the same weights on the "
                             "same rows), not scored again")
            return type(self._curve_results[self._saved_epoch])(self._curve_results[self._saved_epoch])
        if load_best_model:
            self.load_best_model(model_file)
        self.model.eval()
        if self.next_item and not self.model.has_item_matrix:
            self.compute_item_matrix(show_progress)
        return self.evaluate_model(self.model, eval_data, show_progress)

    def evaluate_model(self, model, eval_data, show_progress=False):
        """``model``'s metrics on this trainer's evaluation rows (labeled) or users (next-item): the LLM model, or a
        frozen encoder scored beside it on the same rows."""
        if self.task == "candidates":
            return self.evaluate_candidates(model, eval_data, show_progress)
        if self.next_item:
            result = self.evaluator.evaluate(self.rank_users(model, eval_data, show_progress))
            result["users"] = len(self._eval_rows(eval_data))
            return result
        return evaluate_groups(self.evaluator, self.score_rows(model, eval_data, show_progress))

    # ---------------------------------------------------------------- next-item evaluation
    @torch.inference_mode()
    def compute_item_matrix(self, show_progress=False):
        """Every item's vector (``model.item_vectors``), items split between processes and gathered, set as the
        model's item matrix (row 0, the padding item, stays 0)."""
        n_items = self.model.n_items
        was_training = self.model.training
        self.model.eval()
        started = time.time()
        ids = list(range(1, n_items))
        local = {"row": [], "vector": []}
        with self.accelerator.split_between_processes(ids) as mine:
            size = int(self.config["eval_batch_size"])
            for start in tqdm(range(0, len(mine), size), ncols=100, desc=set_color("Item matrix", "pink"),
                              disable=not show_progress or not self.accelerator.is_main_process):
                batch = torch.tensor(mine[start: start + size])
                local["vector"].append(self.model.item_vectors(batch).float().cpu())
                local["row"].append(batch)
        rows = torch.cat(local["row"]) if local["row"] else torch.zeros(0, dtype=torch.long)
        vectors = torch.cat(local["vector"]) if local["vector"] else torch.zeros(0, self.model.vector_size)
        gathered = self._gather_rows({"row": rows, "vector": vectors})
        matrix = torch.zeros(n_items, vectors.shape[1])
        matrix[gathered["row"].long()] = gathered["vector"]
        self.model.set_item_matrix(matrix)
        self._save_prompt_caches()
        self.model.train(was_training)
        self._matrix_seconds = time.time() - started  # the time estimate counts these passes
        from recbole_cora.plan import duration

        self.logger.info(set_color("item matrix", "yellow") + f": {n_items - 1} items through the LLM in "
                         f"{duration(self._matrix_seconds)}")

    def _longest_first(self, eval_data, rows, model):
        """``rows`` with the longest prompts first (``length_bucketing``: batches of like lengths, less padding; no
        effect on results, which are gathered in row order), for this trainer's own model."""
        if self.config["length_bucketing"] in ("eval", "train_and_eval") and model is self.model:
            lengths = self._prompt_lengths(eval_data, rows)
            if lengths is not None:
                return [row for _, row in sorted(zip(lengths, rows), key=lambda pair: -pair[0])]
        return rows

    @torch.inference_mode()
    def rank_users(self, model, eval_data, show_progress=False):
        """Full ranking of every item for this trainer's evaluation users of ``eval_data`` (one row per user in
        RecBole's sequential valid/test data), split between processes and gathered once: a RecBole DataStruct
        whose ``rec.topk`` is what RecBole's Collector builds (hits in the top max(topk), then the number of
        positives), for RecBole's ranking metrics. The user's earlier items are masked with ``mask_history``."""
        rows = self._eval_rows(eval_data)
        depth = max(self.config["topk"])
        iid_field = self.config["ITEM_ID_FIELD"]
        local = {"row": [], "hits": []}
        with self.accelerator.split_between_processes(rows) as mine:
            mine = self._longest_first(eval_data, mine, model)
            loader = self._row_loader(eval_data, mine, self.config["eval_batch_size"], shuffle=False)
            position = 0
            for interaction in tqdm(loader, total=len(loader), ncols=100, desc=set_color("Evaluate   ", "pink"),
                                    disable=not show_progress or not self.accelerator.is_main_process):
                interaction = interaction.to(self.device)
                scores = model.full_sort_predict(interaction).view(len(interaction), -1).float().clone()
                scores[:, 0] = -float("inf")
                if self.config["mask_history"]:
                    mask_history(scores, interaction, self.config)
                top = torch.topk(scores, depth, dim=-1).indices
                target = interaction[iid_field].to(top.device).view(-1, 1)
                local["hits"].append((top == target).float().cpu())
                local["row"].append(torch.tensor(mine[position: position + len(top)]))
                position += len(top)
        self._save_prompt_caches()
        gathered = self._gather_rows({
            "row": torch.cat(local["row"]) if local["row"] else torch.zeros(0, dtype=torch.long),
            "hits": torch.cat(local["hits"]) if local["hits"] else torch.zeros(0, depth),
        })
        hits = gathered["hits"].long()
        struct = DataStruct()
        # integers, as RecBole's Collector makes them (NDCG indexes with the count of positives)
        struct.set("rec.topk", torch.cat([hits, torch.ones(len(hits), 1, dtype=torch.long)], dim=1))  # one positive per user
        return struct

    @torch.inference_mode()
    def evaluate_candidates(self, model, eval_data, show_progress=False):
        """``task: candidates``: this trainer's evaluation users of ``eval_data`` rank their fixed candidate lists
        (``candidate_scores``), users split between processes and gathered once; RecBole's evaluator gives Hit and
        NDCG at each k over the lists. On the test split a model that answers in text (``answer_candidates``: RSLLM)
        also gives its greedy answer's ValidRatio and HitRatio@1 (over valid answers, LLaRA's, and over all users)."""
        rows = self._eval_rows(eval_data)
        part = eval_data._dataset
        lists = candidate_lists(self.config, part)
        # greedy answers on the test users only: early stopping reads the ranking, and generation is the slow half
        answers = hasattr(model, "answer_candidates") and bool(self.config["generate_answers"]) and part.phase == "test"
        local = {"row": [], "score": [], "choice": []}
        with self.accelerator.split_between_processes(rows) as mine:
            mine = self._longest_first(eval_data, mine, model)
            loader = self._row_loader(eval_data, mine, self.config["eval_batch_size"], shuffle=False)
            position = 0
            for interaction in tqdm(loader, total=len(loader), ncols=100, desc=set_color("Candidates ", "pink"),
                                    disable=not show_progress or not self.accelerator.is_main_process):
                interaction = interaction.to(self.device)
                batch_rows = torch.tensor(mine[position: position + len(interaction)])
                batch_lists = lists[batch_rows].to(self.device)
                local["score"].append(candidate_scores(model, interaction, batch_lists).double().cpu())
                if answers:
                    local["choice"].append(torch.as_tensor(model.answer_candidates(interaction, batch_lists)).double())
                local["row"].append(batch_rows)
                position += len(interaction)
        self._save_prompt_caches()
        width = lists.shape[1]
        gathered = self._gather_rows({
            "row": torch.cat(local["row"]) if local["row"] else torch.zeros(0, dtype=torch.long),
            "score": torch.cat(local["score"]) if local["score"] else torch.zeros(0, width, dtype=torch.float64),
            **({"choice": torch.cat(local["choice"]) if local["choice"] else torch.zeros(0, dtype=torch.float64)}
               if answers else {}),
        })
        chosen_rows = gathered["row"].long()
        positions = target_positions(lists[chosen_rows], part.inter_feat[part.iid_field][chosen_rows])
        result = self.evaluator.evaluate(ranking_struct(gathered["score"], positions, max(self.config["topk"])))
        result["users"] = len(rows)
        if answers:
            result.update(answer_metrics(gathered["choice"].long(), positions))
        return result

    # ---------------------------------------------------------------- encoder residual
    @torch.inference_mode()
    def fit_residual_gate(self, valid_data, show_progress=False):
        """``encoder_residual``: the gate g of score = encoder + g x LLM fitted on this trainer's valid users (every
        item, or their candidate lists), the g minimising the cross-entropy of their targets
        (``EncoderResidual.best_gate``); users split between processes, gathered once, g the same everywhere.
        Returns (g, valid loss at g = 0, at g)."""
        from recbole_cora.model.layers import EncoderResidual

        model = self.model
        model.eval()
        if self.next_item and not model.has_item_matrix:
            self.compute_item_matrix(show_progress)
        rows = self._eval_rows(valid_data)
        lists = candidate_lists(self.config, valid_data._dataset) if self.task == "candidates" else None
        local = {"row": [], "encoder": [], "llm": [], "target": []}
        with self.accelerator.split_between_processes(rows) as mine:
            loader = self._row_loader(valid_data, mine, self.config["eval_batch_size"], shuffle=False)
            position = 0
            for interaction in tqdm(loader, total=len(loader), ncols=100, desc=set_color("Fit gate   ", "pink"),
                                    disable=not show_progress or not self.accelerator.is_main_process):
                interaction = interaction.to(self.device)
                batch_rows = torch.tensor(mine[position: position + len(interaction)])
                batch_lists = None if lists is None else lists[batch_rows].to(self.device)
                encoder, llm, target = model.residual_parts(interaction, batch_lists)
                for key, value in (("encoder", encoder), ("llm", llm), ("target", target)):
                    local[key].append(value.double().cpu())
                local["row"].append(batch_rows)
                position += len(interaction)
        self._save_prompt_caches()
        gathered = self._gather_rows({key: torch.cat(values) for key, values in local.items()})
        gate, before, after = EncoderResidual.best_gate(gathered["encoder"], gathered["llm"], gathered["target"])
        model.residual.gate.fill_(gate)
        self.logger.info(set_color("encoder residual", "yellow") + f": gate g = {gate:.4f} fitted on {len(rows)} valid "
                         f"users (their cross-entropy {before:.4f} with the encoder alone, {after:.4f} with g"
                         + ("" if gate else ": the LLM's score adds nothing significant there, the encoder ranks") + ")")
        self._curve_results.clear()  # a curve point's weights scored with another gate are not this model
        return gate, before, after

    # ---------------------------------------------------------------- labeled evaluation
    @torch.inference_mode()
    def score_rows(self, model, eval_data, show_progress=False):
        """``model.predict`` on this trainer's evaluation rows of ``eval_data``, split between processes
        (no padded duplicates) and gathered once, as a RecBole DataStruct (score, label, uid, warm)."""
        rows = self._eval_rows(eval_data)
        label_field, uid_field, warm_field = (self.config[k] for k in ("LABEL_FIELD", "USER_ID_FIELD", "WARM_FIELD"))
        fields = {"row": [], "score": [], "label": [], "uid": [], "warm": []}
        with self.accelerator.split_between_processes(rows) as mine:
            mine = self._longest_first(eval_data, mine, model)
            loader = self._row_loader(eval_data, mine, self.config["eval_batch_size"], shuffle=False)
            position = 0
            for interaction in tqdm(loader, total=len(loader), ncols=100, desc=set_color("Evaluate   ", "pink"),
                                    disable=not show_progress or not self.accelerator.is_main_process):
                scores = model.predict(interaction.to(self.device)).double().cpu()  # no float32 ties near 0 or 1
                fields["row"].append(torch.tensor(mine[position: position + len(scores)]))
                position += len(scores)
                fields["score"].append(scores)
                fields["label"].append(interaction[label_field].float().cpu())
                fields["uid"].append(interaction[uid_field].cpu())
                fields["warm"].append(
                    interaction[warm_field].float().cpu() if warm_field in interaction else torch.ones(len(scores))
                )
        self._save_prompt_caches()
        local = {k: torch.cat(v) if v else torch.zeros(0) for k, v in fields.items()}
        gathered = self._gather_rows(local)
        struct = DataStruct()
        struct.set("rec.score", gathered["score"])
        struct.set("data.label", gathered["label"])
        struct.set("data.uid", gathered["uid"].long())
        struct.set("data.warm", gathered["warm"])
        return struct

    def _save_prompt_caches(self):
        if self.accelerator.is_main_process:
            self.model.save_prompt_caches()

    def _gather_rows(self, local):
        """Every process's rows exactly once, in row order (padding added for the gather is dropped). ``local``
        maps names to tensors whose first dimension is the row; ``row`` holds the row indices."""
        if self.accelerator.num_processes == 1:
            order = torch.argsort(local["row"])  # rows may have been scored longest prompt first
            return {key: values[order] for key, values in local.items()}
        n = torch.tensor([len(local["row"])], device=self.accelerator.device)
        longest = int(self.accelerator.gather(n).max())
        out = {}
        for key, values in local.items():
            padded = torch.full((longest, *values.shape[1:]), -1.0 if key == "row" else 0.0, dtype=torch.float64)
            padded[: len(values)] = values.double()
            out[key] = self.accelerator.gather(padded.to(self.accelerator.device)).cpu()
        keep = out["row"] >= 0
        order = torch.argsort(out["row"][keep])
        return {key: values[keep][order].to(local[key].dtype) for key, values in out.items()}

    # ---------------------------------------------------------------- checkpoints
    def _save_checkpoint(self, epoch, verbose=True, **kwargs):
        folder = Path(kwargs.pop("saved_model_file", self.saved_model_file))
        if folder == Path(self.saved_model_file):  # known to every process, so that all of them skip a test pass
            self._saved_epoch = epoch + 1  # RecBole passes the 0-based epoch index
        if not self.accelerator.is_main_process:
            return
        save_trainable(self.model, folder, self.config, {"epoch": epoch, "best_valid_score": self.best_valid_score},
                       fingerprint=self._fingerprint)
        if verbose:
            self.logger.info(set_color("Saving current", "blue") + f": {folder}")

    def load_best_model(self, model_file=None):
        if self.optimizer is None:  # nothing was trained, nothing saved
            return
        self.accelerator.wait_for_everyone()  # the main process may still be writing it
        folder = Path(model_file or self.saved_model_file)
        load_trainable(self.model, folder)
        self.logger.info(f"Loading trainable parameters from {folder}")

    # ---------------------------------------------------------------- resume
    @property
    def resume_dir(self):
        return ckpt.resume_dir_of(self.saved_model_file)

    def save_resume_state(self, epoch, batches, total_loss, finished=False):
        """Everything a killed run needs to go on exactly from here (see ``recbole_cora.checkpoint``):
        written by all processes into one temporary folder (each its own RNG), published by the main one."""
        from accelerate.utils import broadcast_object_list

        name = f"state-e{epoch}-b{batches}" + ("-final" if finished else "")
        folder = self.resume_dir / name
        tmp = None
        if self.accelerator.is_main_process:
            self.resume_dir.mkdir(parents=True, exist_ok=True)
            tmp = ckpt.temporary_dir(folder)
        tmp = Path(broadcast_object_list([str(tmp) if tmp else None])[0])
        rng_tensors, rng_meta = ckpt.rng_to_files()
        rank = self.accelerator.process_index
        ckpt.save_tensors(rng_tensors, tmp / f"rng-{rank}.safetensors")
        (tmp / f"rng-{rank}.json").write_text(json.dumps(rng_meta))
        self.accelerator.wait_for_everyone()
        if self.accelerator.is_main_process:
            opt_tensors, opt_meta = ckpt.optimizer_to_files(self.optimizer)
            ckpt.save_tensors(self.model.trainable_state_dict(), tmp / "trainable.safetensors")
            ckpt.save_tensors(opt_tensors, tmp / "optimizer.safetensors")
            state = {
                "epoch": epoch, "batches": batches, "total_loss": total_loss, "finished": finished,
                "cur_step": self.cur_step, "best_valid_score": _plain_number(self.best_valid_score),
                "best_valid_result": _plain_result(self.best_valid_result),
                "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
                "optimizer": opt_meta, "processes": self.accelerator.num_processes,
                "model_file": str(self.saved_model_file), "config": ckpt.plain_config(self.config),
                "split_fingerprint": self._fingerprint,
            }
            (tmp / "state.json").write_text(json.dumps(state, indent=1, default=str))
            ckpt.publish_dir(tmp, folder)
            previous = self.resume_dir / "LATEST"
            old = previous.read_text().strip() if previous.is_file() else None
            ckpt.write_pointer(self.resume_dir, name)
            if old and old != name and (self.resume_dir / old).exists():
                shutil.rmtree(self.resume_dir / old)
        self.accelerator.wait_for_everyone()

    def resume_from(self, resume_file):
        """Load the newest state of ``resume_file`` (a run's ``.resume`` folder or one of its states): the
        trainable parameters, optimizer, scheduler, RNG of every process and the position in the data."""
        resume_file = Path(resume_file)
        state_dir = resume_file if (resume_file / "state.json").is_file() else ckpt.latest_state(resume_file)
        state = ckpt.read_state(state_dir)
        diff = ckpt.config_differences(state["config"], ckpt.plain_config(self.config))
        if diff:
            raise ckpt.CheckpointError(
                f"resume state '{state_dir}' was made with other options ({diff}): resume with the options "
                "it was started with, or start a new run without --resume."
            )
        if state["processes"] != self.accelerator.num_processes:
            raise ckpt.CheckpointError(
                f"resume state '{state_dir}' was saved by {state['processes']} process(es); this run has "
                f"{self.accelerator.num_processes}. Resume with the same number of processes."
            )
        load_trainable(self.model, state_dir)  # a state folder holds trainable.safetensors like a model folder
        optimizer = ckpt.optimizer_from_files(
            ckpt.load_tensors(state_dir / "optimizer.safetensors", "the resume state is unusable"), state["optimizer"]
        )
        self.optimizer.load_state_dict(optimizer)
        rank = self.accelerator.process_index
        rng = (
            ckpt.load_tensors(state_dir / f"rng-{rank}.safetensors", "the resume state is unusable"),
            json.loads((state_dir / f"rng-{rank}.json").read_text()),
        )
        self.cur_step = state["cur_step"]
        self.best_valid_score = float(state["best_valid_score"])
        self.best_valid_result = state["best_valid_result"]
        if Path(state["model_file"]).name != state_dir.parent.name[: -len(".resume")]:  # it saves where the run did
            raise ckpt.CheckpointError(
                f"resume state '{state_dir}' names the model folder '{state['model_file']}', not its own run's: it was "
                "edited or copied from another run; resume that run, or start again without --resume.")
        self.saved_model_file = state["model_file"]
        self.start_epoch = state["epoch"]
        self._pending_scheduler = state["scheduler"]
        self._resumed, self._resumed_finished = True, state["finished"]
        self._resumed_fingerprint = state.get("split_fingerprint")
        if state["batches"]:  # mid-epoch: the RNG is restored once that epoch's loader exists
            self._resume_position = (state["epoch"], state["batches"], state["total_loss"])
            self._resume_rng = rng
        else:
            ckpt.restore_rng(*rng)
        self.logger.info(
            f"Resumed from {state_dir}: epoch {state['epoch']}, {state['batches']} batch(es) done"
            + (" (training had finished)" if state["finished"] else "")
        )


def warmup_cosine(step, warmup, total, start, floor):
    """The learning-rate factor of optimizer step ``step`` (0-based): linear from ``start`` to 1 over ``warmup``
    steps, then half a cosine from 1 down to ``floor`` at ``total``."""
    if step < warmup:
        return start + (1.0 - start) * step / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def _plain_number(value):
    value = float(value)
    return value if value == value and abs(value) != float("inf") else str(value)


def _plain_result(result):
    return None if result is None else {k: float(v) for k, v in dict(result).items()}


def _first(batch):
    """RecBole's eval loaders return (interaction, row_idx, positive_u, positive_i); train loaders the interaction."""
    return batch[0] if isinstance(batch, tuple) else batch
