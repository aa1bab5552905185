"""The labeled task: each (user, item) row has a 0/1 label; a model scores it, and the evaluation is AUC, UAUC and
LogLoss over all, warm and cold test rows (CoLLM's and CoRA's protocol)."""

import torch
from recbole.data.dataloader import FullSortEvalDataLoader
from recbole.evaluator.collector import DataStruct
from recbole.utils import InputType, set_color
from tqdm import tqdm

from recbole_cora.data import LabeledDataset
from recbole_cora.data.rows import eval_row_subset
from recbole_cora.evaluator import GROUPS, LabeledCollector, evaluate_groups, subset_struct
from recbole_cora.tasks.base import Task

COLUMNS = (("auc", "AUC"), ("uauc", "UAUC"), ("uauc_users", "UAUC users"), ("logloss", "LogLoss"))


def probabilities(scores, config):
    """A RecBole model's ``predict`` scores as probabilities: a model trained pairwise (BPR) scores with an unbounded
    dot product, which passes through a sigmoid so that LogLoss is defined (AUC and UAUC are unchanged by it)."""
    return torch.sigmoid(scores) if config["MODEL_INPUT_TYPE"] == InputType.PAIRWISE else scores


class LabeledEvaluationMixin:
    """RecBole's trainers on the labeled task: AUC / UAUC / LogLoss for all, warm and cold rows, on the same
    ``eval_rows`` rows as the LLM models; a pairwise model's scores pass through a sigmoid (``probabilities``)."""

    def __init__(self, config, model):
        super().__init__(config, model)
        self.eval_collector = LabeledCollector(config)

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
            scores = probabilities(scores, self.config)
            self.eval_collector.eval_batch_collect(scores, interaction, positive_u, positive_i)
        struct = self.eval_collector.get_data_struct()
        rows = eval_row_subset(len(eval_data._dataset), self.config)
        if len(rows) < len(eval_data._dataset):  # the loader keeps the split's row order
            struct = subset_struct(struct, torch.tensor(rows))
        result = evaluate_groups(self.evaluator, struct)
        self.wandblogger.log_eval_metrics(result, head="eval")
        return result


@torch.inference_mode()
def row_scores(loop, model, eval_data, show_progress=False, rows=None):
    """``model.predict`` on the evaluation rows of ``eval_data`` (``rows``: these) through ``loop`` (an
    ``EvaluationLoop``), as a
    RecBole DataStruct (score, label, uid, warm): the labeled evaluation's scores, and a saved run's pairs."""
    config = loop.config
    label_field, uid_field, warm_field = (config[k] for k in ("LABEL_FIELD", "USER_ID_FIELD", "WARM_FIELD"))

    def score(interaction, _):
        scores = model.predict(interaction).double().cpu()  # no float32 ties near 0 or 1
        warm = interaction[warm_field].float().cpu() if warm_field in interaction else torch.ones(len(scores))
        return {"score": scores, "label": interaction[label_field].float().cpu(),
                "uid": interaction[uid_field].cpu(), "warm": warm}

    empty = {key: torch.zeros(0) for key in ("score", "label", "uid", "warm")}
    gathered = loop.run(model, eval_data, score, empty, show_progress=show_progress, rows=rows)
    struct = DataStruct()
    struct.set("rec.score", gathered["score"])
    struct.set("data.label", gathered["label"])
    struct.set("data.uid", gathered["uid"].long())
    struct.set("data.warm", gathered["warm"])
    return struct


class LabeledTask(Task):
    name = "labeled"
    embedded_preset = "embedded_default.yaml"

    def dataset_class(self, config):
        return LabeledDataset

    def recbole_mixin(self, config):
        return LabeledEvaluationMixin

    def option_problems(self, config):
        if not (config["history_len"] or 0) > 0:  # a ranking task's ~ means MAX_ITEM_LIST_LENGTH
            return [f"{config['model']} shows the user's history: set `history_len` > 0."]
        return []

    # ---------------------------------------------------------------- evaluation
    def evaluate(self, loop, model, eval_data, evaluator, show_progress=False, answers=True):
        return evaluate_groups(evaluator, row_scores(loop, model, eval_data, show_progress))

    # ---------------------------------------------------------------- results
    def columns(self, results):
        return COLUMNS

    def table_rows(self, model, result, metrics):
        """One row per group of test rows (all / warm / cold) the result has."""
        rows = []
        for group in GROUPS:
            prefix = "" if group == "all" else f"{group}_"
            n_rows = result.get(f"{prefix}rows")
            if n_rows is None:
                continue
            rows.append({"model": model, "group": group, "n": n_rows, **{m: result.get(prefix + m) for m in metrics}})
        return rows

    def header(self):
        return "test rows"

    # ---------------------------------------------------------------- a saved run
    def recommend(self, run, users, k, candidates, show_progress=False):
        """Each user's ``candidates`` items (``run.candidate_pool``: its frozen CF encoder's best, the most popular
        train items, or every item for a RecBole model; items the user rated positively excluded) scored as pairs by
        the run's model, the best ``k`` kept."""
        uids = run.ids(run.dataset.uid_field, users, "user")
        rows = []
        for token, uid in zip(users, uids.tolist()):
            pool, source = run.candidate_pool(uid, candidates)
            scores = run.predict_pairs([token] * len(pool), run.item_tokens(pool), show_progress=show_progress)["score"]
            order = torch.argsort(scores, descending=True, stable=True)[:k].tolist()
            rows += run.ranked_rows(token, [pool[p] for p in order], scores[order].tolist(), source)
        return rows
