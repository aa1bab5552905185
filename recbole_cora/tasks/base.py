"""What a task is: the data it reads, how RecBole's models and the LLM models are evaluated on it, the columns of
its results, its lines in the plan and how a saved run of it recommends. The pipeline, the trainers, the results,
the plan, the checks and a saved run ask the run's task (``recbole_cora.tasks.get_task``); none of them compares
task names.

A task never imports the trainer: its evaluation gets the trainer's evaluation loop (``run(model, data, score,
empty)``: the rows split between processes, scored, gathered) and gives only how a batch is scored and what the
gathered scores mean; its recommendation gets the saved run.
"""

METRIC_TITLES = {"recall": "Recall", "ndcg": "NDCG", "mrr": "MRR", "hit": "Hit", "precision": "Precision", "map": "MAP"}


class Task:
    """One task. Subclasses set the attributes and override what differs."""

    name = ""
    #: One valid and one test row per user (RecBole's sequential data, the history its ID list), ranked and measured
    #: by RecBole's metric@k; False: labeled rows scored by AUC, UAUC and LogLoss.
    ranking = False
    unit = "rows"  # what the evaluation counts
    embedded_preset = ""  # the preset of ``properties/presets/`` run_recbole_cora.py runs with no data given

    def __repr__(self):
        return f"{type(self).__name__}({self.name!r})"

    # ---------------------------------------------------------------- configuration and data
    def configure(self, internal, own_task):
        """Change the Config's internal dict of a model whose own task is ``own_task`` for this task (after the
        task's YAML is read); nothing by default."""

    def dataset_class(self, config):
        """The plugin's dataset class for ``config``'s model on this task, or None for RecBole's own."""
        return None

    def candidate_lists(self, config, part):
        """The (users, candidates) item lists of a split ``part`` this task evaluates on, or None (no lists)."""
        return None

    def list_options(self, config):
        """The options that decide the rows' candidate lists (part of a cache key); [] without lists."""
        return []

    def option_problems(self, config):
        """Problems of ``config``'s options on this task (sentences that say what to do)."""
        return []

    # ---------------------------------------------------------------- evaluation
    def recbole_mixin(self, config):
        """The evaluation RecBole's trainers get on this task (``recbole_cora.utils.get_trainer`` mixes it in front
        of the trainer RecBole would choose, after the plugin's checkpoints), or None for RecBole's own."""
        return None

    def evaluate(self, loop, model, eval_data, evaluator, show_progress=False, answers=True):
        """``model``'s metrics on the evaluation rows of ``eval_data``, scored through ``loop`` (the LLM trainer's
        ``EvaluationLoop``). ``answers``: False skips a model's greedy answers."""
        raise NotImplementedError

    # ---------------------------------------------------------------- results
    def columns(self, results):
        """(key, title) of the metric columns of ``results`` (``{model: result}``)."""
        raise NotImplementedError

    def table_rows(self, model, result, metrics):
        """The table's rows of one model's ``result``: dicts ``{model, group, n, <metric>...}``."""
        raise NotImplementedError

    def header(self):
        """The title of a table's group column."""
        return "test"

    # ---------------------------------------------------------------- the plan
    def split_text(self, args):
        """The split in the plan, from ``eval_args``."""
        return f"{args['split']}, order {args['order']}, group_by {args['group_by']}"

    def test_text(self, config, test):
        """What the plan adds after the test rows: how they are ranked or scored."""
        return ""

    # ---------------------------------------------------------------- a saved run
    def recommend(self, run, users, k, candidates, show_progress=False):
        """The top ``k`` items for each user token of ``users``: ``[{user, rank, item, score, title, source}]``."""
        raise NotImplementedError


class RankingTask(Task):
    """What the next-item and candidate tasks share: one row per user, RecBole's metric@k over the test users."""

    ranking = True
    unit = "users"
    #: A model that answers in text (RSLLM): LLaRA's ValidRatio and HitRatio@1 of its greedy answers.
    answer_columns = (("valid_ratio", "ValidRatio"), ("hit_ratio@1_valid", "HitRatio@1 (valid)"),
                      ("hit_ratio@1_all", "HitRatio@1 (all)"))

    def columns(self, results):
        """Every ranking metric@k the results hold, in RecBole's order, e.g. ("ndcg@10", "NDCG@10"); then the
        greedy answers' columns where a result has them."""
        answers = dict(self.answer_columns)
        keys = []
        for result in results.values():
            keys += [key for key in result if "@" in key and key not in keys and key not in answers]
        found = tuple((key, f"{METRIC_TITLES.get(key.split('@')[0], key.split('@')[0])}@{key.split('@')[1]}")
                      for key in keys)
        return found + tuple((key, title) for key, title in self.answer_columns if any(key in r for r in results.values()))

    def table_rows(self, model, result, metrics):
        return [{"model": model, "group": "users", "n": result.get("users"), **{m: result.get(m) for m in metrics}}]

    def split_text(self, args):
        return f"{args['split']}, order {args['order']}"
