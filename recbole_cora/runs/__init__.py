"""Using a finished run: find it, rebuild it from its own folder, score (user, item) pairs, recommend the top K.

    config, model, dataset, train_data, valid_data, test_data = recbole_cora.load_data_and_model("saved/CoRA-...")
    run = recbole_cora.load_run("saved/CoRA-...")
    run.predict_pairs(["196", "186"], ["242", "302"])      # probabilities, in input order, with warm flags
    run.recommend(["196"], k=10)                            # top 10 per user, with scores and titles

* ``finding``: what a path names (a model folder, a multi-stage run, a ``.pth``, a results folder) and the records
  it holds, checked before anything is built;
* ``loading``: the run rebuilt from its recorded options, refused where the data, the LLM or a stage changed;
* ``saved_run``: ``SavedRun``, scoring through the run's own evaluation loop and recommending as its task does;
* ``files``: the pairs and scores files of ``--predict``.
"""

from recbole_cora.runs.files import read_pairs, write_scores
from recbole_cora.runs.finding import RUN_FILE, RunLoadError, find_saved_model, write_run_file
from recbole_cora.runs.loading import FREE_OPTIONS, load_data_and_model, load_run
from recbole_cora.runs.saved_run import SavedRun

__all__ = [
    "FREE_OPTIONS", "RUN_FILE", "RunLoadError", "SavedRun", "find_saved_model", "load_data_and_model", "load_run",
    "read_pairs", "write_run_file", "write_scores",
]
