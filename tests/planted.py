"""Small synthetic datasets whose answer is carried by what a model reads, for the planted-signal tests.

Items are ml-100k's first movies (their real titles, so the tiny LLM's tokenizer knows the words); users, their
interactions and the answer are drawn here from one seed:

* ``labeled``: users and items in two groups (user u: u % 2, item i: i % 2). ``signal="cf"``: a user rates an item
  5 when their groups match and 1 otherwise, every year the same (the text carries nothing; a CF encoder trained on
  the positives separates the groups). ``signal="cf_item"``: everyone rates group 1 5 and group 0 1, every year
  the same (the answer is the item's alone, and only its CF embedding says which). ``signal="text"``: an item of group 1 has release year 1990 and is rated 5 by
  everyone, one of group 0 has 1970 and is rated 1 (the answer is in the item's text alone).
* ``next_item``: a fixed random cycle over the items; a user starts anywhere and walks along it, so the next item
  is a function of the last one (a sequential encoder learns it; the prompt shows the last titles).
"""

import random
from pathlib import Path

ITEM_FIELDS = "item_id:token\tmovie_title:token_seq\trelease_year:token"
INTER_FIELDS = "user_id:token\titem_id:token\trating:float\ttimestamp:float"

# What a test passes to Config for these files (no dataset config names them).
OPTIONS = {
    "load_col": {"inter": ["user_id", "item_id", "rating", "timestamp"], "item": ["item_id", "movie_title", "release_year"]},
    "text_fields": ["movie_title", "release_year"], "item_text_template": "{movie_title} ({release_year})",
    "user_inter_num_interval": "[0,inf)", "item_inter_num_interval": "[0,inf)",
}
LABELED_OPTIONS = {
    **OPTIONS, "threshold": {"rating": 4},
    "eval_args": {"split": {"RS": [0.8, 0.1, 0.1]}, "order": "RO", "group_by": "user", "mode": "labeled"},
}


def ml100k_titles(n):
    import recbole

    source = Path(recbole.__file__).parent / "dataset_example" / "ml-100k" / "ml-100k.item"
    rows = [line.split("\t") for line in source.read_text(encoding="latin-1").splitlines()[1:]]
    return [row[1] for row in rows[:n]]


def _write(folder, name, inter, items):
    data = Path(folder) / name
    data.mkdir(parents=True, exist_ok=True)
    (data / f"{name}.inter").write_text("\n".join([INTER_FIELDS] + ["\t".join(map(str, r)) for r in inter]) + "\n")
    (data / f"{name}.item").write_text("\n".join([ITEM_FIELDS] + ["\t".join(map(str, r)) for r in items]) + "\n")
    return str(Path(folder))


def labeled(folder, signal, name=None, users=64, items=32, per_user=16, seed=0):
    """Write the labeled dataset (``signal``: cf or text); returns the data_path (the dataset is ``name``)."""
    if signal not in ("cf", "cf_item", "text"):
        raise ValueError(signal)
    name = name or f"planted-{signal.replace('_', '-')}"
    rng = random.Random(seed)
    titles = ml100k_titles(items)
    year = {i: (1990 if i % 2 else 1970) if signal == "text" else 1995 for i in range(1, items + 1)}
    inter = []
    for u in range(1, users + 1):
        for i in rng.sample(range(1, items + 1), per_user):
            liked = (u % 2 == i % 2) if signal == "cf" else (i % 2 == 1)
            inter.append((u, i, 5 if liked else 1, rng.randrange(10**6)))
    return _write(folder, name, inter, [(i, titles[i - 1], year[i]) for i in range(1, items + 1)])


def next_item(folder, name="planted-next", users=120, items=40, steps=(10, 12), seed=0):
    """Write the next-item dataset: each user walks ``steps`` interactions along one fixed cycle of the items."""
    rng = random.Random(seed)
    cycle = list(range(1, items + 1))
    rng.shuffle(cycle)
    successor = {cycle[k]: cycle[(k + 1) % items] for k in range(items)}
    titles = ml100k_titles(items)
    inter = []
    for u in range(1, users + 1):
        item, t = rng.choice(cycle), 0
        for _ in range(rng.randint(*steps)):
            inter.append((u, item, 5, t))
            item, t = successor[item], t + 1
    return _write(folder, name, inter, [(i, titles[i - 1], 1995) for i in range(1, items + 1)])
