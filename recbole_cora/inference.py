"""Using a finished run: rebuild it from its own folder, score (user, item) pairs, recommend the top K items.

    config, model, dataset, train_data, valid_data, test_data = recbole_cora.load_data_and_model("saved/CoRA-...")
    run = recbole_cora.load_run("saved/CoRA-...")
    run.predict_pairs(["196", "186"], ["242", "302"])      # probabilities, in input order, with warm flags
    run.recommend(["196"], k=10)                            # top 10 per user, with scores and titles

A run is found by what it wrote: an LLM model's folder (``saved/CoRA-<time>/``: ``trainable.safetensors`` and
``config.json``; CoLLM's and Laser's last step ``-step2``), a RecBole model's checkpoint (``saved/<Model>-<time>.pth``)
or the run's results folder (its ``run.json`` names the checkpoint). It is rebuilt from the options it recorded:
the same dataset and split (refused when the data's split fingerprint changed), the same LLM (refused when its
weights differ), the stage folders it read, then its trained parameters. Nothing is unpickled: a RecBole model's
run is read from the safetensors + JSON pair beside its ``.pth`` (``recbole_files``), or that ``.pth`` weights-only.

Scoring goes through the run's own evaluation path (``LLMTrainer.score_rows``: eval batch size, length bucketing,
rows split between processes and gathered), so a pair scores as that row would in an evaluation. A pair's history
is the user's positives before the pair's time (by default after every interaction in the data); a user or item
the train split never saw is scored as cold (the LLM reads the title; a CF row is untrained) and flagged so.
"""

import csv
import json
import math
import os
from logging import getLogger
from pathlib import Path

import torch
from recbole.data.interaction import Interaction
from recbole.utils import InputType

from recbole_cora.checkpoint import (PATH_OPTIONS, CheckpointError, config_differences, llm_identity, load_trainable,
                                     plain_config, resolve_dir)

RUN_FILE = "run.json"  # in a results folder: where the run's trained model is
# Options a loaded run may change: where and how it runs and evaluates, not what it computes.
FREE_OPTIONS = {"show_progress", "state", "eval_batch_size", "eval_rows", "curve_epochs", "resume", "device_map",
                "llm_max_memory", "llm_offload_dir", "results_dir", "checkpoint_dir", "trust_remote_code"}


class RunLoadError(ValueError):
    """A saved run that cannot be loaded as it is; the message says why and what to do."""


def write_run_file(folder, saved_model):
    """``run.json`` in a results folder: the trained model it came from."""
    Path(folder, RUN_FILE).write_text(json.dumps({"saved_model": os.path.abspath(str(saved_model))}, indent=2))


# ------------------------------------------------------------------------------------------- finding a run
def find_saved_model(run):
    """``(kind, path)``: ``("llm", folder)`` or ``("recbole", .pth file)`` for what ``run`` names."""
    path = Path(str(run))
    if path.is_dir() and (path / RUN_FILE).is_file():  # a results folder
        path = _read_run_file(path / RUN_FILE)
    for step in ("-step2", "-step1"):  # CoLLM's and Laser's runs: the last step holds the final model
        stepped = path.with_name(path.name + step)
        if not path.exists() and resolve_dir(stepped).is_dir():
            path = stepped
            break
    path = resolve_dir(path)
    if path.is_dir() and (path / "trainable.safetensors").is_file():
        return "llm", path
    if path.is_file() and path.suffix == ".pth":
        return "recbole", path
    if path.is_dir() and path.name.endswith(".resume"):
        raise RunLoadError(f"'{run}' is a resume folder: load the run's model folder ('{path.name[:-7]}').")
    raise RunLoadError(
        f"'{run}' is not a saved run: give an LLM model's folder (saved/CoRA-<time>/ with trainable.safetensors), a "
        "RecBole model's checkpoint (saved/LightGCN-<time>.pth) or a results folder with run.json."
    )


def _read_run_file(path):
    """The saved model a results folder's ``run.json`` names: a string path to something that exists."""
    try:
        saved = json.loads(path.read_text()).get("saved_model")
    except (OSError, ValueError, AttributeError) as err:
        raise RunLoadError(f"'{path}' could not be read as {{\"saved_model\": PATH}} ({err}); it is damaged: load "
                           "the saved model itself (saved/<Model>-<time>).") from err
    if not isinstance(saved, str) or not saved:
        raise RunLoadError(f"'{path}' names no saved model (its saved_model is {saved!r}): load the saved model itself.")
    target = Path(saved) if os.path.isabs(saved) else path.parent / saved
    if not (target.exists() or any(resolve_dir(target.with_name(target.name + s)).exists() for s in ("-step2", "-step1"))):
        raise RunLoadError(f"'{path}' names '{saved}', which does not exist: the saved model was moved or deleted.")
    return target


def check_run_record(record, where):
    """A run record (``config.json``'s or a checkpoint's ``run``) holds what rebuilds the run, with the right types."""
    if not isinstance(record, dict) or not isinstance(record.get("options"), dict):
        raise RunLoadError(f"'{where}' holds no run record with options (a JSON object under 'run'): it was not "
                           "written by recbole-cora, or was edited; train the run again.")
    options = record["options"]
    wrong = [key for key in ("model", "dataset") if not isinstance(options.get(key), str)]
    if not isinstance(record.get("split_fingerprint"), (str, type(None))):
        wrong.append("split_fingerprint")
    if not isinstance(record.get("llm"), (dict, type(None))):
        wrong.append("llm")
    if wrong:
        raise RunLoadError(f"'{where}': the run record's {wrong} are missing or of the wrong type; it was edited or "
                           "damaged: train the run again.")


# ------------------------------------------------------------------------------------------- loading
def load_data_and_model(run, **overrides):
    """RecBole's ``load_data_and_model`` for every model this package trains: ``(config, model, dataset,
    train_data, valid_data, test_data)`` rebuilt from ``run`` (see the module's docstring)."""
    loaded = load_run(run, **overrides)
    return loaded.config, loaded.model, loaded.dataset, loaded.train_data, loaded.valid_data, loaded.test_data


def load_run(run, **overrides):
    """The run ``run`` names, rebuilt: a ``SavedRun``. ``overrides`` may change how it runs (``FREE_OPTIONS``)."""
    from recbole_cora.compat import silence_recbole_warnings

    silence_recbole_warnings()
    wrong = sorted(set(overrides) - FREE_OPTIONS)
    if wrong:
        raise RunLoadError(f"a loaded run can change only {sorted(FREE_OPTIONS)}; not {wrong} (they change the model).")
    kind, path = find_saved_model(run)
    return _load_llm_run(path, overrides) if kind == "llm" else _load_recbole_run(path, overrides)


def _read_saved_config(folder):
    path = folder / "config.json"
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise RunLoadError(f"'{path}' could not be read ({err}): the run folder is incomplete; train again.") from err
    if not isinstance(saved, dict) or not isinstance(saved.get("config", {}), dict):
        raise RunLoadError(f"'{path}' is not a run's config (a JSON object with 'config' and 'run'): train again.")
    if "run" not in saved:
        raise RunLoadError(
            f"'{folder}' was saved by an older recbole-cora that did not record the options it was run with: it "
            "cannot be rebuilt. Train it again (or continue it with --resume) to save a loadable run."
        )
    return saved


def _recorded_options(record):
    """The options a run recorded, as they resolved. ``model_options`` is left out: the run's own model's entries
    are already in the record (``Config`` wrote them in, unless a --key=value of the run's command line had the
    same key), so applying them again would overwrite what the command line chose."""
    options = dict(record["options"])
    options.pop("model_options", None)
    return options


def _build(options, overrides):
    from recbole.data import data_preparation
    from recbole.utils import init_logger, init_seed

    from recbole_cora.compat import make_run_dirs
    from recbole_cora.config import Config
    from recbole_cora.utils import create_dataset

    if options.get("trust_remote_code") and overrides.get("trust_remote_code") is not True:
        # a saved run's record must not switch on the execution of code shipped with a model folder
        raise RunLoadError(
            f"the run was trained with trust_remote_code: True, which runs Python code from the folder of llm_path "
            f"'{options.get('llm_path')}'. A loaded run does not take that from its files: if you trust that model's "
            "code, say so yourself (load_run(..., trust_remote_code=True), or --trust_remote_code=True).")
    config = Config(config_dict={**options, "state": "WARNING", **overrides}, check=False)
    init_seed(config["seed"], config["reproducibility"])
    make_run_dirs(config)
    init_logger(config)
    dataset = create_dataset(config)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    return config, dataset, (train_data, valid_data, test_data)


def _check_split(dataset, saved_fingerprint, where):
    if saved_fingerprint and dataset.fingerprint != saved_fingerprint:
        raise RunLoadError(
            f"the data of '{where}' changed since the run: its split fingerprint was {saved_fingerprint}, the data "
            f"now gives {dataset.fingerprint}. Restore the data files the run was trained on (or train again)."
        )


def _load_llm_run(folder, overrides):
    from recbole_cora.model.abstract_llm_recommender import place_model
    from recbole_cora.utils import get_model

    saved = _read_saved_config(folder)
    record = saved["run"]
    check_run_record(record, folder / "config.json")
    config, dataset, splits = _build(_recorded_options(record), overrides)
    ignored = set(PATH_OPTIONS) | FREE_OPTIONS | {"model_options"}  # paths were made absolute; these may change
    diff = config_differences(*({k: v for k, v in c.items() if k not in ignored} for c in (saved["config"], plain_config(config))))
    if diff:
        raise RunLoadError(
            f"'{folder}' rebuilds with other options than it was trained with ({diff}): this recbole-cora's defaults "
            "differ from the one that trained it. Use that version, or train again."
        )
    _check_split(dataset, record.get("split_fingerprint"), folder)
    for option in ("cf_stage_dir", "reclora_stage_dir", "sequence_stage_dir"):
        if config[option] and not Path(config[option]).is_dir():
            raise RunLoadError(f"the stage folder '{config[option]}' ({option}) this run read is gone: it cannot be "
                               "rebuilt without it (restore it, or train the run again).")
    model_class = get_model(config["model"])
    model = model_class(config, splits[0]._dataset)
    identity = llm_identity(model.llm)
    if record.get("llm") and _weights(identity) != _weights(record["llm"]):
        raise RunLoadError(
            f"llm_path '{config['llm_path']}' is not the LLM '{folder}' was trained with (its weights differ: "
            f"{record['llm']} then, {identity} now). Point llm_path at that model."
        )
    stages = model.training_stages()
    try:
        if stages == [None] or "-step" not in folder.name:
            load_trainable(model, folder)
        else:  # CoLLM, Laser: each step's folder holds what that step trained (CoLLM's step 2: the mapping only)
            base, last = folder.name.rsplit("-step", 1)
            for stage in stages:
                if int(stage) > int(last):
                    break
                model.set_stage(stage)
                part = resolve_dir(folder.with_name(f"{base}-step{stage}"))
                if part.is_dir():
                    load_trainable(model, part)
    except CheckpointError as err:
        raise RunLoadError(str(err)) from err
    model = place_model(model, config["device"])
    model.eval()
    return SavedRun(config, model, dataset, splits, folder, "llm")


def _load_recbole_run(path, overrides):
    from recbole_cora.recbole_files import CorruptCheckpointError, read_recbole_model
    from recbole_cora.utils import get_model

    try:
        checkpoint = read_recbole_model(path)  # its safetensors + JSON pair, or weights-only: nothing unpickled
    except CorruptCheckpointError as err:
        raise RunLoadError(str(err)) from err
    record = checkpoint.get("run")
    if record is None:
        raise RunLoadError(
            f"'{path}' was saved by RecBole or an older recbole-cora, which did not record the options and split it "
            "was trained on: it cannot be rebuilt safely. Train it again with this package."
        )
    check_run_record(record, checkpoint["source"])
    config, dataset, splits = _build(_recorded_options(record), overrides)
    _check_split(dataset, record.get("split_fingerprint"), path)
    model = get_model(config["model"])(config, splits[0]._dataset).to(config["device"])
    try:
        model.load_state_dict(checkpoint["state_dict"])
    except RuntimeError as err:
        raise RunLoadError(f"'{checkpoint['source']}' does not fit {config['model']} as its options build it "
                           f"({' '.join(str(err).split())[:300]}): it was edited, or saved with other options.") from err
    model.load_other_parameter(checkpoint.get("other_parameter"))
    model.eval()
    return SavedRun(config, model, dataset, splits, path, "recbole")


def _weights(identity):
    return {key: value for key, value in identity.items() if key != "name_or_path"}  # the folder may have moved


class _Rows:
    """The smallest RecBole-loader face ``LLMTrainer.score_rows`` needs: ``_dataset`` and ``collate_fn``."""

    def __init__(self, dataset):
        self._dataset = dataset

    def collate_fn(self, index):
        return self._dataset[torch.as_tensor(index, dtype=torch.long)]


class SavedRun:
    """A run rebuilt from its folder: ``config``, ``model``, ``dataset`` and the three splits' loaders."""

    def __init__(self, config, model, dataset, splits, path, kind):
        self.config, self.model, self.dataset = config, model, dataset
        self.train_data, self.valid_data, self.test_data = splits
        self.path, self.kind = Path(path), kind
        self.logger = getLogger()
        self._trainer = None
        self._positives = None

    # ---------------------------------------------------------------- the run's own evaluation
    @property
    def trainer(self):
        if self._trainer is None:
            from recbole_cora.utils import get_trainer

            self._trainer = get_trainer(self.config["MODEL_TYPE"], self.config["model"], self.config)(self.config, self.model)
        return self._trainer

    def evaluate(self, split="test", show_progress=False):
        """The run's metrics on ``split`` (``valid`` or ``test``), as the run itself computed them."""
        data = {"valid": self.valid_data, "test": self.test_data}[split]
        if self.kind == "llm":
            return self.trainer.evaluate_model(self.model, data, show_progress)
        return self.trainer.evaluate(data, load_best_model=False, show_progress=show_progress)

    # ---------------------------------------------------------------- tokens
    def _ids(self, field, tokens, what, lines=None):
        mapping = self.dataset.field2token_id[field]
        ids, unknown = [], []
        for k, token in enumerate(tokens):
            index = mapping.get(str(token))
            if index is None or index == 0:
                unknown.append((lines[k] if lines else k + 1, token))
                index = 0
            ids.append(index)
        if unknown:
            shown = ", ".join(f"line {line}: {token!r}" for line, token in unknown[:5])
            more = f" (and {len(unknown) - 5} more)" if len(unknown) > 5 else ""
            raise RunLoadError(f"{len(unknown)} {what} token(s) are in no file of dataset '{self.dataset.dataset_name}': "
                               f"{shown}{more}. Use the tokens of its atomic files.")
        return torch.tensor(ids, dtype=torch.long)

    # ---------------------------------------------------------------- pairs
    def pair_rows(self, users, items, times=None, lines=None):
        """The rows of (user, item[, time]) token pairs as the run's dataset would hold them: ids, the user's
        history of positives before the time (default: after the last interaction), the warm flag."""
        if self.config["task"] != "labeled":
            raise RunLoadError(f"scoring pairs is for the labeled task; {self.config['model']} ranks next items "
                               "(use recommend).")
        data = self.dataset
        uid = self._ids(data.uid_field, users, "user", lines)
        iid = self._ids(data.iid_field, items, "item", lines)
        feat = data.inter_feat
        end = float(feat[data.time_field].max()) + 1.0 if data.time_field in feat else 0.0
        when = torch.tensor([end if t is None or t == "" else float(t) for t in (times or [None] * len(uid))],
                            dtype=torch.float64)
        fields = {data.uid_field: uid, data.iid_field: iid, data.label_field: torch.zeros(len(uid))}
        if data.time_field in feat:
            fields[data.time_field] = when
        if data.history_len:
            history = data.histories_before(uid, when)
            fields[data.history_field] = history
            if data.history_length_field:
                fields[data.history_length_field] = (history > 0).sum(dim=1)
        warm_users, warm_items = data.warm_masks  # users and items of the train split (LabeledDataset)
        warm = warm_users[uid] & warm_items[iid]
        fields[data.warm_field] = warm.float()
        return data.copy(Interaction(fields)), warm

    def predict_pairs(self, users, items, times=None, show_progress=False, lines=None):
        """``{"score": float64 probabilities, "warm": bools, "title": the items' titles}`` for the pairs, in input order."""
        part, warm = self.pair_rows(users, items, times, lines)
        titles = [self.title(i) for i in part.inter_feat[self.dataset.iid_field].tolist()]
        if self.kind == "llm":
            eval_rows = self.config["eval_rows"]
            self.config["eval_rows"] = None  # every pair
            try:
                struct = self.trainer.score_rows(self.model, _Rows(part), show_progress)
            finally:
                self.config["eval_rows"] = eval_rows
            scores = struct.get("rec.score").double()
        else:
            scores = self._recbole_scores(part)
        return {"score": scores, "warm": warm, "title": titles}

    @torch.no_grad()
    def _recbole_scores(self, part):
        loader = _Rows(part)
        size = int(self.config["eval_batch_size"])
        out = []
        for start in range(0, len(part), size):
            batch = loader.collate_fn(list(range(start, min(start + size, len(part))))).to(self.config["device"])
            scores = self.model.predict(batch).double().cpu()
            if self.config["MODEL_INPUT_TYPE"] == InputType.PAIRWISE:
                scores = torch.sigmoid(scores)  # as the labeled evaluation does for BPR-style scores
            out.append(scores)
        return torch.cat(out) if out else torch.zeros(0, dtype=torch.float64)

    # ---------------------------------------------------------------- recommending
    def positives(self):
        """Per internal user id, the set of items with a positive row anywhere in the data (never recommended)."""
        if self._positives is None:
            data = self.dataset
            feat = data.inter_feat
            keep = feat[data.label_field] == 1 if data.label_field in feat else torch.ones(len(feat), dtype=torch.bool)
            self._positives = {}
            for user, item in zip(feat[data.uid_field][keep].tolist(), feat[data.iid_field][keep].tolist()):
                self._positives.setdefault(user, set()).add(item)
        return self._positives

    def title(self, item_id):
        return self.dataset.item_title(item_id) if getattr(self.dataset, "item_texts", None) else ""

    def recommend(self, users, k=10, candidates=50, show_progress=False):
        """The top ``k`` items for each user token, best first: ``[{user, rank, item, score, title, source}]``.

        A labeled LLM model re-ranks the ``candidates`` best items of its frozen CF encoder (items the user rated
        positively excluded) by its Yes probability; without a CF encoder, the most popular train items. A RecBole
        general model ranks all items by its own score; any other labeled model scores every item."""
        if self.config["task"] == "next_item":
            return self._recommend_next(users, k)
        if self.config["task"] == "candidates":
            return self._recommend_from_list(users, k, candidates)
        uids = self._ids(self.dataset.uid_field, users, "user")
        rows = []
        for token, uid in zip(users, uids.tolist()):
            pool, source = self._candidates(uid, candidates)
            scores = self.predict_pairs([token] * len(pool), self._item_tokens(pool), show_progress=show_progress)["score"]
            order = torch.argsort(scores, descending=True, stable=True)[:k].tolist()
            for rank, position in enumerate(order, 1):
                item = pool[position]
                rows.append({"user": token, "rank": rank, "item": self._item_tokens([item])[0],
                             "score": float(scores[position]), "title": self.title(item), "source": source})
        return rows

    def _sequence_batch(self, users):
        """(the rows of ``users`` as a next-item model reads them after the user's whole sequence: its last
        ``MAX_ITEM_LIST_LENGTH`` items in time order, and every item each user interacted with)."""
        data = self.dataset
        feat = data.inter_feat
        uids = self._ids(data.uid_field, users, "user")
        stamps = feat[data.time_field].double() if data.time_field in feat else torch.arange(len(feat)).double()
        order = torch.argsort(stamps, stable=True)
        width = int(self.config["MAX_ITEM_LIST_LENGTH"])
        sequences, seen = [], []
        for uid in uids.tolist():
            mine = order[feat[data.uid_field][order] == uid]
            seen.append(feat[data.iid_field][mine])
            sequences.append(seen[-1][-width:])
        history = torch.zeros(len(uids), width, dtype=torch.long)
        for row, items in enumerate(sequences):
            history[row, : len(items)] = items
        lengths = torch.tensor([max(1, len(items)) for items in sequences])
        batch = Interaction({
            data.uid_field: uids, data.iid_field: torch.tensor([int(s[-1]) if len(s) else 0 for s in sequences]),
            self.config["ITEM_ID_FIELD"] + self.config["LIST_SUFFIX"]: history,
            self.config["ITEM_LIST_LENGTH_FIELD"]: lengths,
        }).to(self.config["device"])
        return batch, seen

    @torch.no_grad()
    def _recommend_from_list(self, users, k, candidates):
        """The candidate task: each user's list of ``candidates`` items it never interacted with (its frozen encoder's
        best, or the most popular train items) ranked by the model's own candidate score after its whole sequence
        (RSLLM: the likelihood of each title; a labeled model: its Yes probability)."""
        from recbole_cora.training import candidate_scores

        batch, seen = self._sequence_batch(users)
        encoder = self.model.reference_encoder() if self.kind == "llm" else None
        rows = []
        for row, (token, items) in enumerate(zip(users, seen)):
            one = batch[torch.tensor([row])]
            if encoder is not None and hasattr(encoder, "full_sort_predict") and not hasattr(encoder, "user_table"):
                scores = encoder.full_sort_predict(one).view(-1).double().cpu()  # a frozen sequential recommender
                scores[0], scores[items] = -math.inf, -math.inf
                pool = torch.topk(scores, min(candidates, int(torch.isfinite(scores).sum()))).indices.tolist()
                source = f"{encoder.cf_model} top {candidates}"
            else:
                pool, source = self._candidates(int(one[self.dataset.uid_field]), candidates)
            lists = torch.tensor([pool], device=self.config["device"])
            scores = candidate_scores(self.model, one, lists).view(-1).double().cpu()
            for rank, position in enumerate(torch.argsort(scores, descending=True, stable=True)[:k].tolist(), 1):
                item = pool[position]
                rows.append({"user": token, "rank": rank, "item": self._item_tokens([item])[0],
                             "score": float(scores[position]), "title": self.title(item), "source": source})
        return rows

    @torch.no_grad()
    def _recommend_next(self, users, k):
        """A next-item model ranks every item after the user's whole sequence (its last ``MAX_ITEM_LIST_LENGTH``
        items, in time order); an item the user already interacted with is never recommended."""
        uids = self._ids(self.dataset.uid_field, users, "user")
        batch, seen = self._sequence_batch(users)
        scores = self.model.full_sort_predict(batch).view(len(uids), -1).double().cpu()
        scores[:, 0] = -math.inf
        rows = []
        for row, (token, items) in enumerate(zip(users, seen)):
            scores[row, items] = -math.inf
            top = torch.topk(scores[row], k)
            for rank, (score, item) in enumerate(zip(top.values.tolist(), top.indices.tolist()), 1):
                rows.append({"user": token, "rank": rank, "item": self._item_tokens([item])[0], "score": score,
                             "title": self.title(item), "source": "all items"})
        return rows

    def _item_tokens(self, ids):
        tokens = self.dataset.field2id_token[self.dataset.iid_field]
        return [str(tokens[i]) for i in ids]

    def _candidates(self, uid, n):
        """(internal item ids, where they came from) a user's recommendation is chosen among."""
        known = self.positives().get(uid, set())
        allowed = torch.ones(self.dataset.item_num, dtype=torch.bool)
        allowed[0] = False
        if known:
            allowed[list(known)] = False
        encoder = self.model.reference_encoder() if self.kind == "llm" else None
        table = getattr(encoder, "user_table", None)
        if table is not None:  # the frozen CF encoder's own ranking
            scores = (encoder.item_table @ encoder.user_table[uid]).double().cpu()
            scores[~allowed] = -math.inf
            top = torch.topk(scores, min(n, int(allowed.sum()))).indices.tolist()
            return top, f"{encoder.cf_model} top {n}"
        if self.kind == "llm":  # no CF encoder: the most popular train items
            counts = torch.bincount(self.train_data._dataset.inter_feat[self.dataset.iid_field],
                                    minlength=self.dataset.item_num).double()
            counts[~allowed] = -math.inf
            top = torch.topk(counts, min(n, int(allowed.sum()))).indices.tolist()
            return top, f"popular top {n}"
        return torch.nonzero(allowed).squeeze(1).tolist(), "all items"


# ------------------------------------------------------------------------------------------- files
def read_pairs(path):
    """(users, items, times, line numbers) of a pairs file: ``user<TAB>item[<TAB>time]`` per line; a header line
    ``user_id<TAB>item_id...`` and empty lines are skipped."""
    users, items, times, lines = [], [], [], []
    with open(path, newline="", encoding="utf-8") as f:
        for number, row in enumerate(csv.reader(f, delimiter="\t"), 1):
            if not row or not any(cell.strip() for cell in row):
                continue
            if number == 1 and row[0].split(":")[0] in ("user_id", "user", "uid"):
                continue
            if len(row) < 2:
                raise RunLoadError(f"{path}, line {number}: write a user token and an item token separated by a tab "
                                   f"(and optionally a time); got {row!r}.")
            users.append(row[0].strip())
            items.append(row[1].strip())
            times.append(row[2].strip() if len(row) > 2 and row[2].strip() else None)
            lines.append(number)
    if not users:
        raise RunLoadError(f"{path} holds no pairs: write one 'user<TAB>item' per line.")
    return users, items, times, lines


def write_scores(path, users, items, result, titles=None):
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, delimiter="\t", lineterminator="\n")
        writer.writerow(["user", "item", "score", "warm"] + (["title"] if titles else []))
        for k, (user, item) in enumerate(zip(users, items)):
            row = [user, item, f"{float(result['score'][k]):.6f}", "warm" if bool(result["warm"][k]) else "cold"]
            writer.writerow(row + ([titles[k]] if titles else []))
