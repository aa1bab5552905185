"""The evaluation loop of the LLM trainer: one split-score-gather loop for every task.

Rows (or users) are split between processes with no padded duplicates, each process scores its own in batches, and
every process gets all of them back once, in row order, so all see the same metrics (early stopping). What a batch
gives differs by task (a labeled row's score, a user's hits in the full ranking, a candidate list's scores, the two
parts of the encoder residual); the loop around it is the same. It takes a model and rows and never calls the
trainer.
"""

import time

import torch
from recbole.evaluator.collector import DataStruct
from recbole.utils import set_color
from tqdm import tqdm

from recbole_cora.data.candidates import answer_metrics, candidate_lists, ranking_struct, target_positions
from recbole_cora.data.rows import eval_row_subset
from recbole_cora.evaluator import evaluate_groups
from recbole_cora.model.abstract_llm_recommender import LLMRecommender
from recbole_cora.training.recbole_trainers import candidate_scores, mask_history
from recbole_cora.training.sampling import longest_first, row_loader


class EvaluationLoop:
    """Scores models on the fixed evaluation rows of a split (``eval_rows``) under one ``Accelerator``.

    ``cache_owner``: the model whose prompt caches are saved after each pass (the trainer's own)."""

    def __init__(self, accelerator, config, cache_owner):
        self.accelerator, self.config, self.cache_owner = accelerator, config, cache_owner

    @property
    def device(self):
        return self.accelerator.device

    def rows(self, eval_data):
        return eval_row_subset(len(eval_data._dataset), self.config)

    def save_prompt_caches(self):
        if self.accelerator.is_main_process:
            self.cache_owner.save_prompt_caches()

    def run(self, model, eval_data, score, empty, desc="Evaluate   ", show_progress=False):
        """``score(interaction, batch_rows)`` on every evaluation row of ``eval_data``: a dict of tensors whose first
        dimension is the batch's rows. Returns them gathered from every process, in row order, with ``row``.
        ``empty``: each key's tensor for a process that got no rows (its dtype and trailing shape)."""
        rows = self.rows(eval_data)
        local = {"row": []}
        with self.accelerator.split_between_processes(rows) as mine:
            if isinstance(model, LLMRecommender):
                mine = longest_first(model, eval_data, mine, self.config)
            loader = row_loader(eval_data, mine, self.config["eval_batch_size"], shuffle=False, seed=self.config["seed"])
            position = 0
            for interaction in tqdm(loader, total=len(loader), ncols=100, desc=set_color(desc, "pink"),
                                    disable=not show_progress or not self.accelerator.is_main_process):
                interaction = interaction.to(self.device)
                batch_rows = torch.tensor(mine[position: position + len(interaction)], dtype=torch.long)
                position += len(interaction)
                for key, value in score(interaction, batch_rows).items():
                    local.setdefault(key, []).append(value)
                local["row"].append(batch_rows)
        self.save_prompt_caches()
        empty = {"row": torch.zeros(0, dtype=torch.long), **empty}
        return self.gather({key: torch.cat(local[key]) if local.get(key) else empty[key] for key in empty})

    def gather(self, local):
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

    # ---------------------------------------------------------------- the three tasks
    def evaluate(self, model, eval_data, evaluator, show_progress=False, answers=True):
        """``model``'s metrics on the evaluation rows (labeled) or users (next-item, candidates): an LLM model, or a
        frozen encoder scored beside it on the same rows. ``answers``: False skips a model's greedy answers."""
        task = self.config["task"]
        if task == "candidates":
            return self.candidates(model, eval_data, evaluator, show_progress, answers)
        if task == "next_item":
            result = evaluator.evaluate(self.ranking(model, eval_data, show_progress))
            result["users"] = len(self.rows(eval_data))
            return result
        return evaluate_groups(evaluator, self.labeled(model, eval_data, show_progress))

    @torch.inference_mode()
    def labeled(self, model, eval_data, show_progress=False):
        """``model.predict`` on the evaluation rows, as a RecBole DataStruct (score, label, uid, warm)."""
        label_field, uid_field, warm_field = (self.config[k] for k in ("LABEL_FIELD", "USER_ID_FIELD", "WARM_FIELD"))

        def score(interaction, _):
            scores = model.predict(interaction).double().cpu()  # no float32 ties near 0 or 1
            warm = interaction[warm_field].float().cpu() if warm_field in interaction else torch.ones(len(scores))
            return {"score": scores, "label": interaction[label_field].float().cpu(),
                    "uid": interaction[uid_field].cpu(), "warm": warm}

        empty = {key: torch.zeros(0) for key in ("score", "label", "uid", "warm")}
        gathered = self.run(model, eval_data, score, empty, show_progress=show_progress)
        struct = DataStruct()
        struct.set("rec.score", gathered["score"])
        struct.set("data.label", gathered["label"])
        struct.set("data.uid", gathered["uid"].long())
        struct.set("data.warm", gathered["warm"])
        return struct

    @torch.inference_mode()
    def ranking(self, model, eval_data, show_progress=False):
        """Full ranking of every item for the evaluation users (one row per user in RecBole's sequential valid/test
        data): a RecBole DataStruct whose ``rec.topk`` is what RecBole's Collector builds (hits in the top max(topk),
        then the number of positives). The user's earlier items are masked with ``mask_history``."""
        depth = max(self.config["topk"])
        iid_field = self.config["ITEM_ID_FIELD"]

        def score(interaction, _):
            scores = model.full_sort_predict(interaction).view(len(interaction), -1).float().clone()
            scores[:, 0] = -float("inf")
            if self.config["mask_history"]:
                mask_history(scores, interaction, self.config)
            top = torch.topk(scores, depth, dim=-1).indices
            return {"hits": (top == interaction[iid_field].to(top.device).view(-1, 1)).float().cpu()}

        gathered = self.run(model, eval_data, score, {"hits": torch.zeros(0, depth)}, show_progress=show_progress)
        hits = gathered["hits"].long()
        struct = DataStruct()
        # integers, as RecBole's Collector makes them (NDCG indexes with the count of positives)
        struct.set("rec.topk", torch.cat([hits, torch.ones(len(hits), 1, dtype=torch.long)], dim=1))  # one positive per user
        return struct

    @torch.inference_mode()
    def candidates(self, model, eval_data, evaluator, show_progress=False, answers=True):
        """``task: candidates``: the evaluation users rank their fixed candidate lists (``candidate_scores``);
        RecBole's evaluator gives Hit and NDCG at each k over the lists. On the test split a model that answers in
        text (``answers_in_text``: RSLLM) also gives its greedy answer's ValidRatio and HitRatio@1 (over valid
        answers, LLaRA's, and over all users), unless ``answers`` is False."""
        part = eval_data._dataset
        lists = candidate_lists(self.config, part)
        # greedy answers on the test users only: early stopping reads the ranking, and generation is the slow half
        answers = answers and answers_in_text(model) and bool(self.config["generate_answers"]) and part.phase == "test"

        def score(interaction, batch_rows):
            batch_lists = lists[batch_rows].to(self.device)
            out = {"score": candidate_scores(model, interaction, batch_lists).double().cpu()}
            if answers:
                out["choice"] = torch.as_tensor(model.answer_candidates(interaction, batch_lists)).double()
            return out

        empty = {"score": torch.zeros(0, lists.shape[1], dtype=torch.float64),
                 **({"choice": torch.zeros(0, dtype=torch.float64)} if answers else {})}
        gathered = self.run(model, eval_data, score, empty, desc="Candidates ", show_progress=show_progress)
        chosen_rows = gathered["row"].long()
        positions = target_positions(lists[chosen_rows], part.inter_feat[part.iid_field][chosen_rows])
        result = evaluator.evaluate(ranking_struct(gathered["score"], positions, max(self.config["topk"])))
        result["users"] = len(self.rows(eval_data))
        if answers:
            result.update(answer_metrics(gathered["choice"].long(), positions))
        return result

    # ---------------------------------------------------------------- the encoder residual and Laser's item matrix
    @torch.inference_mode()
    def residual_parts(self, model, valid_data, show_progress=False):
        """``encoder_residual``: (encoder scores, LLM scores, target positions) of the evaluation users of
        ``valid_data`` over every item or their candidate lists (``model.residual_parts``)."""
        lists = candidate_lists(self.config, valid_data._dataset) if self.config["task"] == "candidates" else None

        def score(interaction, batch_rows):
            batch_lists = None if lists is None else lists[batch_rows].to(self.device)
            encoder, llm, target = model.residual_parts(interaction, batch_lists)
            return {"encoder": encoder.double().cpu(), "llm": llm.double().cpu(), "target": target.double().cpu()}

        width = (lists.shape[1] if lists is not None else model.n_items,)
        empty = {"encoder": torch.zeros(0, *width, dtype=torch.float64),
                 "llm": torch.zeros(0, *width, dtype=torch.float64), "target": torch.zeros(0, dtype=torch.float64)}
        gathered = self.run(model, valid_data, score, empty, desc="Fit gate   ", show_progress=show_progress)
        return gathered["encoder"], gathered["llm"], gathered["target"]

    @torch.inference_mode()
    def item_matrix(self, model, show_progress=False):
        """Every item's vector (``model.item_vectors``), items split between processes and gathered, set as the
        model's item matrix (row 0, the padding item, stays 0). Returns the seconds it took."""
        n_items = model.n_items
        was_training = model.training
        model.eval()
        started = time.time()
        local = {"row": [], "vector": []}
        with self.accelerator.split_between_processes(list(range(1, n_items))) as mine:
            size = int(self.config["eval_batch_size"])
            for start in tqdm(range(0, len(mine), size), ncols=100, desc=set_color("Item matrix", "pink"),
                              disable=not show_progress or not self.accelerator.is_main_process):
                batch = torch.tensor(mine[start: start + size])
                local["vector"].append(model.item_vectors(batch).float().cpu())
                local["row"].append(batch)
        rows = torch.cat(local["row"]) if local["row"] else torch.zeros(0, dtype=torch.long)
        vectors = torch.cat(local["vector"]) if local["vector"] else torch.zeros(0, model.vector_size)
        gathered = self.gather({"row": rows, "vector": vectors})
        matrix = torch.zeros(n_items, vectors.shape[1])
        matrix[gathered["row"].long()] = gathered["vector"]
        model.set_item_matrix(matrix)
        self.save_prompt_caches()
        model.train(was_training)
        return time.time() - started


def answers_in_text(model):
    """Whether ``model`` also answers a candidate list in text (RSLLM's greedy answer)."""
    return isinstance(model, LLMRecommender) and model.answers_in_text
