"""The next-item task: each user's last interaction is its test row and the one before its valid row (RecBole's
leave-one-out sequential split); a model ranks every item after the user's sequence, and the evaluation is
RecBole's Recall, NDCG, MRR and Hit at each k over the test users, the user's earlier items masked
(``mask_history``)."""

import math

import torch
from recbole.evaluator.collector import DataStruct
from recbole.utils import ModelType

from recbole_cora.data import NextItemDataset
from recbole_cora.evaluator import RowSubsetEvaluator
from recbole_cora.data.rows import eval_row_subset
from recbole_cora.tasks.base import RankingTask


def mask_history(scores, interaction, config):
    """Set to -inf, in place, the scores of the items in each row's ID history (``item_id_list``), if it has one."""
    field = config["ITEM_ID_FIELD"] + config["LIST_SUFFIX"]
    if field in interaction:
        history = interaction[field].to(scores.device)
        rows = torch.arange(len(history), device=scores.device).unsqueeze(1).expand_as(history)
        real = history > 0
        scores[rows[real], history[real]] = -float("inf")
    return scores


class RankingEvaluationMixin:
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


class NextItemTask(RankingTask):
    name = "next_item"
    embedded_preset = "embedded_next_item.yaml"

    def dataset_class(self, config):
        """Sequential models read RecBole's sequential data with item text; general models RecBole's own."""
        return NextItemDataset if config["MODEL_TYPE"] == ModelType.SEQUENTIAL else None

    def recbole_mixin(self, config):
        """Full ranking with the history masked; RecBole's own sampled ranking (``mode: uni100``) as it is."""
        return RankingEvaluationMixin if "full" in set(config["eval_args"]["mode"].values()) else None

    def test_text(self, config, test):
        return f" ({config['eval_args']['mode']['test']} ranking)"

    # ---------------------------------------------------------------- evaluation
    def evaluate(self, loop, model, eval_data, evaluator, show_progress=False, answers=True):
        result = evaluator.evaluate(self.ranking(loop, model, eval_data, show_progress))
        result["users"] = len(loop.rows(eval_data))
        return result

    @torch.inference_mode()
    def ranking(self, loop, model, eval_data, show_progress=False):
        """Full ranking of every item for the evaluation users (one row per user in RecBole's sequential valid/test
        data): a RecBole DataStruct whose ``rec.topk`` is what RecBole's Collector builds (hits in the top max(topk),
        then the number of positives). The user's earlier items are masked with ``mask_history``."""
        config = loop.config
        depth = max(config["topk"])
        iid_field = config["ITEM_ID_FIELD"]

        def score(interaction, _):
            scores = model.full_sort_predict(interaction).view(len(interaction), -1).float().clone()
            scores[:, 0] = -float("inf")
            if config["mask_history"]:
                mask_history(scores, interaction, config)
            top = torch.topk(scores, depth, dim=-1).indices
            return {"hits": (top == interaction[iid_field].to(top.device).view(-1, 1)).float().cpu()}

        gathered = loop.run(model, eval_data, score, {"hits": torch.zeros(0, depth)}, show_progress=show_progress)
        hits = gathered["hits"].long()
        struct = DataStruct()
        # integers, as RecBole's Collector makes them (NDCG indexes with the count of positives)
        struct.set("rec.topk", torch.cat([hits, torch.ones(len(hits), 1, dtype=torch.long)], dim=1))  # one positive per user
        return struct

    # ---------------------------------------------------------------- a saved run
    @torch.no_grad()
    def recommend(self, run, users, k, candidates, show_progress=False):
        """The model ranks every item after the user's whole sequence (its last ``MAX_ITEM_LIST_LENGTH`` items, in
        time order); an item the user already interacted with is never recommended."""
        batch, seen = run.sequence_batch(users)
        scores = run.model.full_sort_predict(batch).view(len(users), -1).double().cpu()
        scores[:, 0] = -math.inf
        rows = []
        for row, (token, items) in enumerate(zip(users, seen)):
            scores[row, items] = -math.inf
            top = torch.topk(scores[row], k)
            rows += run.ranked_rows(token, top.indices.tolist(), top.values.tolist(), "all items")
        return rows
