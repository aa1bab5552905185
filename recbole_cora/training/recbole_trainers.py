"""RecBole's own trainers with the task's evaluation and safe checkpoints mixed in (labeled all/warm/cold, full
ranking with the user's earlier items masked, or fixed candidate lists). ``recbole_cora.utils.get_trainer`` wraps
whichever RecBole trainer a model would get (``Trainer``, ``KGTrainer``, ...) with one of these mixins, so RecBole
baselines and plugin models are trained and evaluated by the same code on the same split."""

import functools

import torch
from recbole.data.dataloader import FullSortEvalDataLoader
from recbole.model.abstract_recommender import AbstractRecommender
from recbole.utils import InputType, set_color
from tqdm import tqdm

from recbole_cora import checkpoint as ckpt
from recbole_cora.compat import atomic_torch_save
from recbole_cora.data.candidates import candidate_lists, pair_scores, ranking_struct, target_positions
from recbole_cora.data.rows import eval_row_subset
from recbole_cora.evaluator import LabeledCollector, evaluate_groups, subset_struct
from recbole_cora.model.abstract_llm_recommender import LLMRecommender
from recbole_cora.model.encoders import FrozenEncoder
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
    """(rows, candidates) scores of each row's candidate list: an LLM model's or a frozen encoder's own
    ``candidate_scores``, else a RecBole model's full ranking's scores at the listed items, else, for a RecBole model
    without a full ranking (DIN, DIEN: CTR models), its ``predict`` of each (row, candidate) pair, ``batch_size``
    pairs at a time."""
    if isinstance(model, (LLMRecommender, FrozenEncoder)):  # its own way (RSLLM's likelihood, a labeled model's pairs)
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
