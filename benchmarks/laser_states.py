"""Can Laser's frozen states rank the next item? A probe of a trained Laser run, layer by layer.

    python benchmarks/laser_states.py --run RUN_FOLDER                 # a finished Laser run (its results folder)
    python benchmarks/laser_states.py --run RUN_FOLDER --train_rows 1024 --layers 14,30

Laser's user vector projects the suffix token's state after [M-Former prefix; prompt with the history's titles;
suffix]; an item's vector projects the same state of a prompt with that item alone. In stage 1 the item matrix is
cached, so the shared projection trains on the user side only and is then applied to every item (QUALITY.md:
the item vectors collapse onto one direction). This probe reads the run's states (its trained M-Former and suffix,
frozen) at each chosen layer output, for ``--train_rows`` training rows, every item and the run's test users, and
ranks every item for the test users (full ranking; the ID history masked where the run's ``mask_history`` says) with

* the raw cosine of the user's and the items' states;
* one linear map shared by both sides (the paper's projection), fitted on the frozen states with InfoNCE over every
  item at the run's temperature;
* two maps, one per side (user, item), fitted the same way: the item map gets its gradient from every item's
  logit, as it cannot in stage 1 where the item matrix is a cache;

each fitted once at the run's own budget (its stage-1 rows: one pass in its batch size at its learning rate) and, as
a ceiling, ``--epochs`` passes in batches of 32. The run's own vectors (its trained projection, as it ranks), its
frozen sequential recommender and the items' training popularity are scored on the same users.

Writes ``laser_states.md`` and ``laser_states.json`` into ``--out``.
"""

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from recbole_cora.runs.loading import load_run  # noqa: E402
from rsllm_states import ranks  # noqa: E402  (the target's rank, ties counted against it)
from recbole_cora.data.rows import eval_row_subset  # noqa: E402
from recbole_cora.tasks import mask_history  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", required=True, help="a finished Laser run: its results folder")
    parser.add_argument("--train_rows", type=int, default=1024)
    parser.add_argument("--test_users", type=int, default=0,
                        help="0: the run's own test users (its eval_rows); N: the first N of the test split")
    parser.add_argument("--layers", default=None, help="comma-separated layer outputs (default: every seventh, "
                                                       "and the last)")
    parser.add_argument("--lr", type=float, default=3e-3, help="the ceiling fits' learning rate")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch", type=int, default=16, help="rows per forward pass through the LLM")
    parser.add_argument("--out", default="laser-states")
    return parser.parse_args(argv)


def metrics(scores, targets, seen):
    """NDCG@10 and Recall@10 of ``targets`` in ``scores`` (users, items) with ``seen`` (users, items) masked and the
    padding item 0 never ranked; ties count against the target."""
    scores = scores.float().masked_fill(seen, -float("inf"))
    scores[:, 0] = -float("inf")
    rank = ranks(scores, targets).float()
    ndcg = torch.where(rank < 10, 1 / torch.log2(rank + 2), torch.zeros_like(rank))
    return {"ndcg@10": float(ndcg.mean()), "recall@10": float((rank < 10).float().mean())}


@torch.no_grad()
def user_states(model, data, rows, layers, batch, mask_config=None):
    """Per layer the suffix states (n, d) of ``rows`` of ``data``; their targets; the items each row's ranking
    masks (its ID history, with ``mask_config``: the run's config, where it sets ``mask_history``); the encoder's full scores."""
    states, targets, seen, encoder = {layer: [] for layer in layers}, [], [], []
    for start in range(0, len(rows), batch):
        collated = data.collate_fn(rows[start:start + batch])
        interaction = collated[0] if isinstance(collated, tuple) else collated
        hidden = suffix_states(model, interaction[model.ITEM_SEQ],
                               model.prompts.token_ids(*model.prompts.rows(interaction, with_target=False)))
        for layer in layers:
            states[layer].append(hidden[layer].float().cpu())
        targets.append(interaction[model.ITEM_ID].cpu())
        mask = torch.zeros(len(interaction), model.n_items)
        if mask_config is not None and mask_config["mask_history"]:  # as the run's evaluation ranks
            mask_history(mask, interaction, mask_config)
        seen.append(mask.isinf())
        encoder.append(model.sequence_encoder.full_sort_predict(interaction)[:, :model.n_items].float().cpu())
    return ({layer: torch.cat(s) for layer, s in states.items()}, torch.cat(targets), torch.cat(seen),
            torch.cat(encoder))


@torch.no_grad()
def item_states(model, layers, batch):
    states = {layer: [] for layer in layers}
    ids = torch.arange(model.n_items)
    for chunk in ids.split(batch):
        token_rows = model.prompts.token_ids([[int(i)] for i in chunk], [0] * len(chunk))
        hidden = suffix_states(model, chunk.view(-1, 1), token_rows)
        for layer in layers:
            states[layer].append(hidden[layer].float().cpu())
    return {layer: torch.cat(s) for layer, s in states.items()}


def suffix_states(model, history, token_rows):
    """Every layer's output at the suffix (``Laser.suffix_states`` reads one): a dict layer -> (batch, d)."""
    inputs, attention, at, _ = model.suffix_inputs(history, token_rows)
    hidden = model.llm.get_decoder()(inputs_embeds=inputs, attention_mask=attention, use_cache=False,
                                     output_hidden_states=True).hidden_states
    rows = torch.arange(len(token_rows))
    return {layer: hidden[layer][rows, at.to(hidden[layer].device)] for layer in range(len(hidden))}


def fit(users, targets, items, shared, size, batch, lr, epochs, temperature, seed=0):
    """InfoNCE over every item of cos(W_u h_u, W_i h_i) / tau on frozen states; W_u = W_i when ``shared``."""
    torch.manual_seed(seed)
    user_map = torch.nn.Linear(users.shape[1], size)
    item_map = user_map if shared else torch.nn.Linear(users.shape[1], size)
    params = list({id(p): p for m in (user_map, item_map) for p in m.parameters()}.values())
    optimizer = torch.optim.Adam(params, lr=lr)
    for _ in range(epochs):
        order = torch.randperm(len(users))
        for start in range(0, len(users), batch):
            rows = order[start:start + batch]
            logits = F.normalize(user_map(users[rows]), dim=-1) @ F.normalize(item_map(items), dim=-1).t()
            logits[:, 0] = -float("inf")
            loss = F.cross_entropy(logits / temperature, targets[rows])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return user_map, item_map


def main(argv=None):
    args = parse_args(argv)
    start = time.time()
    loaded = load_run(args.run)
    model, config = loaded.model, loaded.config
    if type(model).__name__ != "Laser":
        raise SystemExit(f"{args.run} is a {type(model).__name__} run: this probe reads Laser's states.")
    model.eval()
    n_layers = model.llm.config.num_hidden_layers
    layers = [int(x) for x in args.layers.split(",")] if args.layers else sorted({*range(7, n_layers, 7), n_layers})
    generator = torch.Generator().manual_seed(0)
    train_set = loaded.train_data._dataset
    train_rows = torch.randperm(len(train_set), generator=generator)[:args.train_rows].tolist()
    n_test = len(loaded.test_data._dataset)
    test_rows = list(range(min(args.test_users, n_test))) if args.test_users else list(eval_row_subset(n_test, config))
    print(f"reading {len(train_rows)} training rows, {model.n_items - 1} items and {len(test_rows)} test users "
          "through the LLM ...", flush=True)
    train_states, train_targets, _, _ = user_states(model, loaded.train_data, train_rows, layers, args.batch)
    test_states, test_targets, test_seen, test_encoder = user_states(model, loaded.test_data, test_rows, layers,
                                                                     args.batch, config)
    items = item_states(model, layers, args.batch)
    read_s = time.time() - start
    popularity = torch.bincount(train_set.inter_feat[model.ITEM_ID], minlength=model.n_items).float()
    temperature = model.temperature
    run_rows = int(config["train_rows_per_epoch"] or len(train_rows))
    run_batch, run_lr = int(config["train_batch_size"]), float(config["learning_rate"])
    with torch.no_grad():
        own = model.logits(model.projection(test_states[model.vector_layer or n_layers])) \
            if model.hidden_norm is None else None
    table = {"encoder": metrics(test_encoder, test_targets, test_seen),
             "popularity": metrics(popularity.expand(len(test_rows), -1), test_targets, test_seen),
             "run's vectors": metrics(own, test_targets, test_seen) if own is not None else None,
             "layers": {}}
    fits = [("shared map, the run's budget", True, run_batch, run_lr, 1, run_rows),
            ("two maps, the run's budget", False, run_batch, run_lr, 1, run_rows),
            (f"shared map, {args.epochs} passes", True, 32, args.lr, args.epochs, len(train_rows)),
            (f"two maps, {args.epochs} passes", False, 32, args.lr, args.epochs, len(train_rows))]
    for layer in layers:
        u, i = test_states[layer], items[layer]
        row = {"raw cosine": metrics(F.normalize(u, dim=-1) @ F.normalize(i, dim=-1).t(), test_targets, test_seen)}
        for name, shared, batch, lr, epochs, n in fits:
            maps = fit(train_states[layer][:n], train_targets[:n], i, shared, model.vector_size, batch, lr, epochs,
                       temperature)
            with torch.no_grad():
                scores = F.normalize(maps[0](u), dim=-1) @ F.normalize(maps[1](i), dim=-1).t()
            row[name] = metrics(scores, test_targets, test_seen)
        table["layers"][layer] = row
        print(f"layer {layer:3d}: " + " | ".join(f"{name} {q['ndcg@10']:.4f}" for name, q in row.items()), flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    names = list(next(iter(table["layers"].values())))
    own_q = table["run's vectors"]
    lines = [f"Laser's states layer by layer: {len(test_rows)} test users, full ranking of {model.n_items - 1} items "
             f"({'history masked' if config['mask_history'] else 'history ranked'}); maps of {model.vector_size} fitted on {len(train_rows)} training rows' frozen "
             f"states (`python benchmarks/laser_states.py --run <run> --train_rows {args.train_rows} --test_users "
             f"{args.test_users}`). "
             f"NDCG@10 / Recall@10 of {config['sequential_encoder']}: {table['encoder']['ndcg@10']:.4f} / "
             f"{table['encoder']['recall@10']:.4f}; of training popularity: {table['popularity']['ndcg@10']:.4f} / "
             f"{table['popularity']['recall@10']:.4f}"
             + (f"; of the run's own vectors: {own_q['ndcg@10']:.4f} / {own_q['recall@10']:.4f}." if own_q else "."),
             "",
             "| layer | " + " | ".join(f"{n}: NDCG@10 / Recall@10" for n in names) + " |",
             "|---" * (1 + len(names)) + "|"]
    for layer, row in table["layers"].items():
        label = f"{layer} (final norm)" if layer == n_layers else str(layer)
        lines.append(f"| {label} | " + " | ".join(
            f"{row[n]['ndcg@10']:.4f} / {row[n]['recall@10']:.3f}" for n in names) + " |")
    lines += ["", f"Wall: {time.time() - start:.0f} s ({read_s:.0f} s reading the states)."]
    (out / "laser_states.md").write_text("\n".join(lines) + "\n")
    (out / "laser_states.json").write_text(json.dumps({"args": vars(args), **table}, indent=1) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
