"""The tasks, found by name through one registry: ``get_task(config)`` (or a name).

* ``labeled``: (user, item) rows with a 0/1 label; AUC, UAUC, LogLoss over all, warm and cold rows;
* ``next_item``: each user's next item ranked among all items; Recall, NDCG, MRR, Hit at each k;
* ``candidates``: each user's next item ranked in a fixed list of candidates; Hit and NDCG at each k.

Each has its protocol in ``properties/task/<name>.yaml`` (split, metrics, valid metric).
"""

from recbole_cora.tasks.base import RankingTask, Task
from recbole_cora.tasks.candidates import CandidateEvaluationMixin, CandidatesTask, candidate_scores
from recbole_cora.tasks.labeled import LabeledEvaluationMixin, LabeledTask
from recbole_cora.tasks.next_item import NextItemTask, RankingEvaluationMixin, mask_history

TASKS = {task.name: task for task in (LabeledTask(), NextItemTask(), CandidatesTask())}


def get_task(config_or_name):
    """The task a Config runs (its ``task``), or the task of that name (a task is itself)."""
    if isinstance(config_or_name, Task):
        return config_or_name
    name = config_or_name if isinstance(config_or_name, str) else config_or_name["task"]
    try:
        return TASKS[name]
    except KeyError:
        raise ValueError(f"task '{name}' is unknown: use one of {sorted(TASKS)}.") from None


def task_names():
    """The tasks' names, sorted (as messages list them)."""
    return sorted(TASKS)


def results_task(results):
    """The task a table of results (``{model: result}``) is of, as far as its columns go: a ranking task when they
    hold ranking metrics (metric@k), else the labeled one (a folder of results does not record its task)."""
    ranking = any("@" in key for result in results.values() for key in result)
    return TASKS["next_item"] if ranking else TASKS["labeled"]


__all__ = [
    "CandidateEvaluationMixin", "CandidatesTask", "LabeledEvaluationMixin", "LabeledTask", "NextItemTask",
    "RankingEvaluationMixin", "RankingTask", "TASKS", "Task", "candidate_scores", "get_task", "mask_history",
    "results_task", "task_names",
]
