"""The candidate task: the next-item task's users and split, each valid and test user ranking a fixed list of
``candidate_count`` items (its next item and items it never interacted with, drawn once and kept in a file:
``recbole_cora.data.candidates``); the evaluation is RecBole's Hit and NDCG at each k over the lists, and for a
model that answers in text (RSLLM) LLaRA's ValidRatio and HitRatio@1 of its greedy answers."""

import torch
from recbole.model.abstract_recommender import AbstractRecommender
from recbole.utils import ModelType, set_color
from tqdm import tqdm

from recbole_cora.data import NextItemDataset
from recbole_cora.data.candidates import (answer_metrics, candidate_file, candidate_lists, pair_scores, ranking_struct,
                                          scores_at, target_positions)
from recbole_cora.data.rows import eval_row_subset
from recbole_cora.model.abstract_llm_recommender import LLMRecommender
from recbole_cora.model.encoders import FrozenEncoder, FrozenSequentialRecommender
from recbole_cora.tasks.base import RankingTask


def candidate_scores(model, interaction, lists, batch_size=None):
    """(rows, candidates) scores of each row's candidate list: an LLM model's or a frozen encoder's own
    ``candidate_scores``, else a RecBole model's full ranking's scores at the listed items, else, for a RecBole model
    without a full ranking (DIN, DIEN: CTR models), its ``predict`` of each (row, candidate) pair, ``batch_size``
    pairs at a time."""
    if isinstance(model, (LLMRecommender, FrozenEncoder)):  # its own way (RSLLM's likelihood, a labeled model's pairs)
        return model.candidate_scores(interaction, lists)
    if type(model).full_sort_predict is AbstractRecommender.full_sort_predict:
        return pair_scores(model.predict, interaction, lists, model.ITEM_ID, batch_size)
    return scores_at(model.full_sort_predict(interaction), lists)


class CandidateEvaluationMixin:
    """RecBole's trainers on the candidate task: every evaluation user (the ``eval_rows`` users of the split) ranks
    its fixed candidate list by the model's scores (``candidate_scores``); RecBole's evaluator gives Hit and NDCG at
    each k over the list, with the number of users (``users``)."""

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


class CandidatesTask(RankingTask):
    name = "candidates"
    embedded_preset = "embedded_candidates.yaml"

    def configure(self, internal, own_task):
        """A labeled model (TALLRec, CoRA, ..., RecBole's DIN and DIEN) or a general one (LightGCN, as a model or a CF
        stage) reads the sequential data every model of this task reads: RecBole's sequential loaders (one valid and
        test row per user), no rating threshold (every rating is an interaction), and for training each next-item
        row with one uniformly sampled negative (label 0 for a pointwise model, BPR's pair for a pairwise one)."""
        if own_task != "labeled":
            return
        internal["MODEL_TYPE"] = ModelType.SEQUENTIAL
        internal.pop("threshold", None)  # RecBole's context-aware default for ml-100k
        internal["repeatable"] = True
        if internal.get("train_neg_sample_args") is None:
            internal["train_neg_sample_args"] = {"distribution": "uniform", "sample_num": 1}

    def dataset_class(self, config):
        return NextItemDataset  # one split for every model: a CF stage and the LLM model it serves share it

    def candidate_lists(self, config, part):
        return candidate_lists(config, part)

    def list_options(self, config):
        return [self.name, config["candidate_count"], config["candidate_seed"], config["seed"]]

    def recbole_mixin(self, config):
        return CandidateEvaluationMixin

    def test_text(self, config, test):
        count = config["candidate_count"]
        return (f": each ranks its list of {count} candidates (the next item and {count - 1} never interacted with), "
                f"kept in {candidate_file(config, test).parent}")

    # ---------------------------------------------------------------- evaluation
    @torch.inference_mode()
    def evaluate(self, loop, model, eval_data, evaluator, show_progress=False, answers=True):
        """The evaluation users rank their fixed candidate lists (``candidate_scores``); RecBole's evaluator gives Hit
        and NDCG at each k over the lists. On the test split a model that answers in text (``answers_in_text``:
        RSLLM) also gives its greedy answer's ValidRatio and HitRatio@1 (over valid answers, LLaRA's, and over all
        users), unless ``answers`` is False."""
        config = loop.config
        part = eval_data._dataset
        lists = candidate_lists(config, part)
        # greedy answers on the test users only: early stopping reads the ranking, and generation is the slow half
        answers = (answers and isinstance(model, LLMRecommender) and model.answers_in_text
                   and bool(config["generate_answers"]) and part.phase == "test")

        def score(interaction, batch_rows):
            batch_lists = lists[batch_rows].to(loop.device)
            out = {"score": candidate_scores(model, interaction, batch_lists).double().cpu()}
            if answers:
                out["choice"] = torch.as_tensor(model.answer_candidates(interaction, batch_lists)).double()
            return out

        empty = {"score": torch.zeros(0, lists.shape[1], dtype=torch.float64),
                 **({"choice": torch.zeros(0, dtype=torch.float64)} if answers else {})}
        gathered = loop.run(model, eval_data, score, empty, desc="Candidates ", show_progress=show_progress)
        chosen_rows = gathered["row"].long()
        positions = target_positions(lists[chosen_rows], part.inter_feat[part.iid_field][chosen_rows])
        result = evaluator.evaluate(ranking_struct(gathered["score"], positions, max(config["topk"])))
        result["users"] = len(loop.rows(eval_data))
        if answers:
            result.update(answer_metrics(gathered["choice"].long(), positions))
        return result

    # ---------------------------------------------------------------- a saved run
    @torch.no_grad()
    def recommend(self, run, users, k, candidates, show_progress=False):
        """Each user's list of ``candidates`` items it never interacted with (its frozen sequential encoder's best,
        else ``run.candidate_pool``) ranked by the model's own candidate score after its whole sequence (RSLLM: the
        likelihood of each title; a labeled model: its Yes probability)."""
        batch, seen = run.sequence_batch(users)
        encoder = run.model.reference_encoder() if run.kind == "llm" else None
        rows = []
        for row, (token, items) in enumerate(zip(users, seen)):
            one = batch[torch.tensor([row])]
            if isinstance(encoder, FrozenSequentialRecommender):
                scores = encoder.full_sort_predict(one).view(-1).double().cpu()
                scores[0], scores[items] = -float("inf"), -float("inf")
                pool = torch.topk(scores, min(candidates, int(torch.isfinite(scores).sum()))).indices.tolist()
                source = f"{encoder.cf_model} top {candidates}"
            else:
                pool, source = run.candidate_pool(int(one[run.dataset.uid_field]), candidates)
            lists = torch.tensor([pool], device=run.config["device"])
            scores = candidate_scores(run.model, one, lists).view(-1).double().cpu()
            order = torch.argsort(scores, descending=True, stable=True)[:k].tolist()
            rows += run.ranked_rows(token, [pool[p] for p in order], scores[order].tolist(), source)
        return rows

