"""The evaluation loop of the LLM trainer: one split-score-gather loop for every task.

Rows (or users) are split between processes with no padded duplicates, each process scores its own in batches, and
every process gets all of them back once, in row order, so all see the same metrics (early stopping). What a batch
gives differs by task (a labeled row's score, a user's hits in the full ranking, a candidate list's scores: each
task's ``evaluate`` says) and for the encoder residual's two parts; the loop around it is the same. It takes a model
and rows and never calls the trainer.
"""

import time

import torch
from recbole.utils import set_color
from tqdm import tqdm

from recbole_cora.data.rows import eval_row_subset
from recbole_cora.model.abstract_llm_recommender import LLMRecommender
from recbole_cora.tasks import get_task
from recbole_cora.training.sampling import longest_first, row_loader


class EvaluationLoop:
    """Scores models on the fixed evaluation rows of a split (``eval_rows``) under one ``Accelerator``.

    ``cache_owner``: the model whose prompt caches are saved after each pass (the trainer's own)."""

    def __init__(self, accelerator, config, cache_owner):
        self.accelerator, self.config, self.cache_owner = accelerator, config, cache_owner
        self.task = get_task(config)

    @property
    def device(self):
        return self.accelerator.device

    def rows(self, eval_data):
        return eval_row_subset(len(eval_data._dataset), self.config)

    def save_prompt_caches(self):
        if self.accelerator.is_main_process:
            self.cache_owner.save_prompt_caches()

    def run(self, model, eval_data, score, empty, desc="Evaluate   ", show_progress=False, rows=None):
        """``score(interaction, batch_rows)`` on every evaluation row of ``eval_data`` (``rows``: these rows instead):
        a dict of tensors whose first dimension is the batch's rows. Returns them gathered from every process, in row
        order, with ``row``. ``empty``: each key's tensor for a process that got no rows (its dtype and trailing
        shape)."""
        rows = self.rows(eval_data) if rows is None else list(rows)
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

    # ---------------------------------------------------------------- the task's metrics
    def evaluate(self, model, eval_data, evaluator, show_progress=False, answers=True):
        """``model``'s metrics on the evaluation rows (labeled) or users (next-item, candidates): an LLM model, or a
        frozen encoder scored beside it on the same rows, each batch scored as the run's task says
        (``Task.evaluate``). ``answers``: False skips a model's greedy answers."""
        return self.task.evaluate(self, model, eval_data, evaluator, show_progress, answers)

    # ---------------------------------------------------------------- the encoder residual and Laser's item matrix
    @torch.inference_mode()
    def residual_parts(self, model, valid_data, show_progress=False):
        """``encoder_residual``: (encoder scores, LLM scores, target positions) of the evaluation users of
        ``valid_data`` over every item or their candidate lists (``model.residual_parts``)."""
        lists = self.task.candidate_lists(self.config, valid_data._dataset)

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
        vectors = torch.cat(local["vector"]) if local["vector"] else torch.zeros(0, model.item_matrix.shape[1])
        gathered = self.gather({"row": rows, "vector": vectors})
        matrix = torch.zeros(n_items, vectors.shape[1])
        matrix[gathered["row"].long()] = gathered["vector"]
        model.set_item_matrix(matrix)
        self.save_prompt_caches()
        model.train(was_training)
        return time.time() - started

