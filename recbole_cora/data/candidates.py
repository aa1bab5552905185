"""The candidate protocol (``task: candidates``): each valid and test user ranks a fixed list of items, the true next
item and ``candidate_count - 1`` items the user never interacted with.

The lists are drawn once, with ``candidate_seed`` (default: ``seed``), from the split alone, and saved as JSON in
``<cf_checkpoint_dir>/candidates/`` under a key of the split's fingerprint and the draw's options: every model and
every run (and every process of a run) ranks the same lists. LLaRA draws new candidates at every evaluation; here
they never change. A list is in a random order (the target's position says nothing).

Also here: the ranking of candidate scores as RecBole's evaluator reads it (``ranking_struct``), and the parse of a
generated answer into the one candidate it names (``parse_choice``), with LLaRA's ValidRatio / HitRatio@1.
"""

import hashlib
import json
import re
from pathlib import Path

import torch

from recbole_cora.io import atomic_path, build_lock

FORMAT = 1  # the file's layout; a change redraws nothing silently (its key changes)


def seen_items(dataset):
    """Per user id, the sorted item ids of all its interactions in ``dataset`` (every split: the draw never offers an
    item the user has interacted with, before or after)."""
    feat = dataset.inter_feat
    users, items = feat[dataset.uid_field], feat[dataset.iid_field]
    order = torch.argsort(users * dataset.item_num + items)
    users, items = users[order], items[order]
    counts = torch.bincount(users, minlength=dataset.user_num).tolist()
    return [row.unique() for row in torch.split(items, counts)]


def _key(part, count, seed):
    blob = json.dumps([FORMAT, part.fingerprint, part.phase, int(count), int(seed)])
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def candidate_file(config, part):
    """Where the candidate lists of split ``part`` (a valid or test dataset of ``NextItemDataset.build``) are kept."""
    seed = config["candidate_seed"] if config["candidate_seed"] is not None else config["seed"]
    key = _key(part, config["candidate_count"], seed)
    return Path(config["cf_checkpoint_dir"]) / "candidates" / f"{part.dataset_name}-{part.phase}-{key}.json"


def draw(users, targets, seen, n_items, count, seed):
    """(rows, count) item ids: per row its target and ``count - 1`` distinct items outside ``seen[user]``, drawn with
    ``seed`` in row order, then shuffled (the same inputs give the same lists on every machine)."""
    generator = torch.Generator().manual_seed(int(seed))
    lists = torch.empty(len(users), count, dtype=torch.long)
    for row, (user, target) in enumerate(zip(users.tolist(), targets.tolist())):
        known = seen[user]
        free = n_items - 1 - len(known) - (0 if bool((known == target).any()) else 1)
        if count - 1 > free:
            raise ValueError(
                f"candidate_count {count} needs {count - 1} items that user {user} never interacted with, and only "
                f"{free} exist: lower `candidate_count`, or filter users with many interactions out "
                "(`user_inter_num_interval`)."
            )
        excluded = torch.zeros(n_items, dtype=torch.bool)
        excluded[0] = True
        excluded[known] = True
        excluded[target] = True
        chosen = []
        while len(chosen) < count - 1:
            draws = torch.randint(1, n_items, (2 * count,), generator=generator).tolist()
            for item in draws:
                if not excluded[item]:
                    excluded[item] = True
                    chosen.append(item)
                    if len(chosen) == count - 1:
                        break
        row_items = torch.tensor([target, *chosen])
        lists[row] = row_items[torch.randperm(count, generator=generator)]
    return lists


def candidate_lists(config, part):
    """The (rows, candidate_count) item ids of split ``part``'s rows (one per user), from its file, or drawn and
    saved there. Kept on ``part`` for the run."""
    cached = getattr(part, "_candidates", None)
    if cached is not None:
        return cached
    if getattr(part, "phase", None) not in ("valid", "test"):
        raise ValueError("candidate lists exist for the valid and test splits of the next-item data only (task: candidates).")
    count = int(config["candidate_count"])
    if count < 2:
        raise ValueError(f"candidate_count {count}: a list needs the target and at least one other item (use 2 or more).")
    path = candidate_file(config, part)
    targets = part.inter_feat[part.iid_field]
    with build_lock(path, "the candidate lists"):  # several runs at once: one draws them, the others read them
        lists = _read_or_draw(config, part, path, count)
    if not bool((lists == targets.view(-1, 1)).any(dim=1).all()):
        raise ValueError(f"candidate file '{path}' has a list without its user's next item: delete it to draw again.")
    part._candidates = lists
    return lists


def _read_or_draw(config, part, path, count):
    """The lists of ``part`` from ``path``, or drawn and written there (under the file's lock)."""
    feat = part.inter_feat
    users, targets = feat[part.uid_field], feat[part.iid_field]
    user_tokens = part.field2id_token[part.uid_field]
    item_tokens = part.field2id_token[part.iid_field]
    if path.is_file():
        saved = json.loads(path.read_text())
        token2id = part.field2token_id[part.iid_field]
        lists = torch.tensor([[token2id[t] for t in row] for row in saved["candidates"]], dtype=torch.long)
        if saved["users"] != [str(t) for t in user_tokens[users.numpy()]] or lists.shape != (len(users), count):
            raise ValueError(f"candidate file '{path}' does not list this split's users: delete it to draw the lists again.")
    else:
        seed = config["candidate_seed"] if config["candidate_seed"] is not None else config["seed"]
        lists = draw(users, targets, part.seen_items, part.item_num, count, seed)
        record = {
            "dataset": part.dataset_name, "split": part.phase, "split_fingerprint": part.fingerprint, "count": count,
            "seed": int(seed), "users": [str(t) for t in user_tokens[users.numpy()]],
            "candidates": [[str(t) for t in item_tokens[row.numpy()]] for row in lists],
        }
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(record))
    return lists


def target_positions(lists, targets):
    """The column of each row's target in its candidate list."""
    return (lists == targets.view(-1, 1).to(lists.device)).float().argmax(dim=1)


def scores_at(scores, lists):
    """(rows, candidates): a full ranking's scores (rows, items) at each row's listed items."""
    return scores.view(len(lists), -1).gather(1, lists.to(scores.device))


def pair_scores(predict, interaction, lists, item_field, batch_size=None):
    """A pointwise model's scores of candidate lists, (rows, candidates): every row repeated once per candidate with
    the candidate as its ``item_field``, scored by ``predict`` ``batch_size`` pairs at a time (all at once if None).
    How a model that scores one (user, history, item) row at a time (DIN, a labeled LLM model) ranks a list."""
    count = lists.shape[1]
    pairs = interaction.repeat_interleave(count)
    pairs.interaction[item_field] = lists.reshape(-1).to(interaction[item_field].device)
    size = int(batch_size or len(pairs))
    scores = torch.cat([predict(pairs[start: start + size]).view(-1) for start in range(0, len(pairs), size)])
    return scores.view(len(interaction), count)


def ranking_struct(scores, positions, depth):
    """RecBole's ``rec.topk`` from candidate scores (rows, count) and the target's column in each row: hits among the
    first ``depth`` places, then the number of positives (1). Ties are broken by list order (a random order)."""
    from recbole.evaluator.collector import DataStruct

    order = torch.sort(scores.double(), dim=1, descending=True, stable=True).indices[:, :depth]
    hits = (order == positions.view(-1, 1)).long()
    if hits.shape[1] < depth:  # a list shorter than the deepest cut-off: the places past its end are misses
        hits = torch.cat([hits, hits.new_zeros(len(hits), depth - hits.shape[1])], dim=1)
    struct = DataStruct()
    struct.set("rec.topk", torch.cat([hits, torch.ones(len(hits), 1, dtype=torch.long)], dim=1))
    return struct


def _normal(text):
    return re.sub(r"\s+", " ", text).strip().lower()


def parse_choice(answer, titles):
    """The index of the one candidate ``answer`` names, or -1 (none, or more than one). A candidate is named when its
    title occurs in the answer (case and spacing aside); an occurrence inside a longer named title's occurrence does
    not count ("Toy Story" inside "Toy Story 2")."""
    text = _normal(answer)
    spans = []
    for index, title in enumerate(titles):
        title = _normal(title)
        if not title:
            continue
        spans += [(m.start(), m.start() + len(title), index) for m in re.finditer(re.escape(title), text)]
    named = {index for start, end, index in spans
             if not any(s <= start and end <= e and (e - s) > (end - start) for s, e, _ in spans)}
    return named.pop() if len(named) == 1 else -1


def answer_metrics(choices, positions):
    """LLaRA's ValidRatio (answers naming exactly one candidate / all) and HitRatio@1 over those valid answers, and
    HitRatio@1 over all users (an invalid answer is a miss)."""
    choices, positions = torch.as_tensor(choices), torch.as_tensor(positions)
    valid = choices >= 0
    hits = (choices == positions) & valid
    n = max(len(choices), 1)
    return {
        "valid_ratio": float(valid.sum()) / n,
        "hit_ratio@1_valid": float(hits.sum()) / float(valid.sum()) if bool(valid.any()) else float("nan"),
        "hit_ratio@1_all": float(hits.sum()) / n,
    }
