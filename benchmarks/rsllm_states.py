"""Where is the frozen recommender's order in RSLLM's hidden states? A probe of a trained RSLLM run, layer by layer.

    python benchmarks/rsllm_states.py --run RUN_FOLDER                 # a finished RSLLM run (its results folder)
    python benchmarks/rsllm_states.py --run RUN_FOLDER --train_rows 128 --layers 0,15,30

In the text-ID prompt each candidate is its title then its ID token (SASRec's item embedding through the projector),
and with ``user_token`` the prompt ends with the user's SASRec state through the same projector. The user-item
cosine compares the LLM's state at the user's position with each candidate's (as the run's ``candidate_state``
reads it; ``last``: its ID token). For each layer's output (0: the input embeddings; the last: after the final norm,
what the model reads) this reports, on the first ``--test_users`` users of the run's test split and their fixed
lists:

* the raw cosine of the user's and the candidates' states: its Spearman correlation with SASRec's scores of the same
  list (averaged over the users), NDCG@10 and Hit@1 of the target;
* the same after two linear maps (user side, candidate side; ``--head_size`` wide) fitted with the user-item InfoNCE
  on the frozen states of ``--train_rows`` training rows (their lists drawn as training draws them), one pass in
  batches of ``--batch`` at ``--lr`` (what ``user_item_head_size`` trains inside the model in one epoch) and, as a
  ceiling, ``--epochs`` passes in batches of 32.

Writes ``rsllm_states.md`` and ``rsllm_states.json`` into ``--out``.
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

from recbole_cora.data.candidates import candidate_lists  # noqa: E402
from recbole_cora.runs.loading import load_run  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", required=True, help="a finished RSLLM run: its results folder")
    parser.add_argument("--train_rows", type=int, default=1024)
    parser.add_argument("--test_users", type=int, default=100)
    parser.add_argument("--layers", default=None, help="comma-separated layer outputs (default: 0, 1, 2, then every "
                                                       "seventh, and the last)")
    parser.add_argument("--head_size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--out", default="rsllm-states")
    return parser.parse_args(argv)


def ranks(scores, positions):
    """The target's 0-based rank in each row of ``scores`` (ties counted against it)."""
    target = scores.gather(1, positions.view(-1, 1))
    return (scores >= target).sum(dim=1) - 1


def spearman_rows(a, b):
    """The Spearman correlation of each row of ``a`` with the same row of ``b``, averaged."""
    def rank(x):
        return x.argsort(dim=1).argsort(dim=1).float()
    ra, rb = rank(a), rank(b)
    ra, rb = ra - ra.mean(1, keepdim=True), rb - rb.mean(1, keepdim=True)
    return float(((ra * rb).sum(1) / (ra.norm(dim=1) * rb.norm(dim=1))).mean())


def quality(scores, encoder, positions):
    r = ranks(scores, positions).float()
    ndcg = torch.where(r < 10, 1 / torch.log2(r + 2), torch.zeros_like(r))
    return {"spearman_with_encoder": spearman_rows(scores, encoder), "ndcg@10": float(ndcg.mean()),
            "hit@1": float((r == 0).float().mean())}


@torch.inference_mode()
def collect(model, batches, layers):
    """Per layer the users' (n, d) and candidates' (n, c, d) states; the encoder's scores (n, c); target columns."""
    states = {layer: ([], []) for layer in layers}
    encoder, positions = [], []
    for interaction, lists in batches:
        history, target = interaction[model.ITEM_SEQ].cpu(), interaction[model.ITEM_ID].cpu()
        prompts = model.build_prompts(history, lists)
        embeds, mask, _, _ = model.embed(prompts, history=history)
        hidden = model.llm.get_decoder()(inputs_embeds=embeds, attention_mask=mask, use_cache=False,
                                         output_hidden_states=True).hidden_states
        for layer in layers:
            users, candidates = model.states_in(hidden[layer].float(), prompts)
            states[layer][0].append(users.cpu())
            states[layer][1].append(candidates.cpu())
        encoder.append(model.encoder_list_scores(interaction, lists).float().cpu())
        positions.append((lists == target.view(-1, 1)).float().argmax(dim=1))
    return ({layer: (torch.cat(u), torch.cat(c)) for layer, (u, c) in states.items()},
            torch.cat(encoder), torch.cat(positions))


def fit_heads(users, candidates, positions, size, batch, lr, epochs, temperature, seed=0):
    torch.manual_seed(seed)
    heads = [torch.nn.Linear(users.shape[1], size), torch.nn.Linear(users.shape[1], size)]
    optimizer = torch.optim.Adam([p for h in heads for p in h.parameters()], lr=lr)
    for _ in range(epochs):
        order = torch.randperm(len(users))
        for start in range(0, len(users), batch):
            rows = order[start:start + batch]
            logits = F.cosine_similarity(heads[0](users[rows]).unsqueeze(1), heads[1](candidates[rows]), dim=-1)
            loss = F.cross_entropy(logits / temperature, positions[rows])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return heads


def main(argv=None):
    args = parse_args(argv)
    start = time.time()
    loaded = load_run(args.run)
    model, config = loaded.model, loaded.config
    if type(model).__name__ != "RSLLM":
        raise SystemExit(f"{args.run} is a {type(model).__name__} run: this probe reads RSLLM's states.")
    model.eval()
    model.set_stage(2)
    n_layers = model.llm.config.num_hidden_layers
    layers = [int(x) for x in args.layers.split(",")] if args.layers else sorted(
        {0, 1, 2, *range(7, n_layers, 7), n_layers})
    generator = torch.Generator().manual_seed(0)
    train_set = loaded.train_data._dataset
    rows = torch.randperm(len(train_set), generator=generator)[:args.train_rows]
    train_batches = []
    for k in range(0, len(rows), 8):
        interaction = loaded.train_data.collate_fn(rows[k:k + 8].tolist())
        interaction = interaction[0] if isinstance(interaction, tuple) else interaction
        history, target = interaction[model.ITEM_SEQ].cpu(), interaction[model.ITEM_ID].cpu()
        train_batches.append((interaction, model.training_lists(history, target, generator=generator)))
    test = loaded.test_data
    lists = candidate_lists(config, test._dataset)
    users = min(args.test_users, len(lists))
    test_batches = []
    for k in range(0, users, 8):
        block = list(range(k, min(k + 8, users)))
        interaction = test.collate_fn(block)
        interaction = interaction[0] if isinstance(interaction, tuple) else interaction
        test_batches.append((interaction, lists[torch.tensor(block)]))
    print(f"reading {len(rows)} training rows and {users} test users' lists through the LLM ...", flush=True)
    train_states, _, train_positions = collect(model, train_batches, layers)
    test_states, test_encoder, test_positions = collect(model, test_batches, layers)
    temperature = model.temperatures["user_item"]
    table = {"encoder": quality(test_encoder, test_encoder, test_positions), "layers": {}}
    for layer in layers:
        u, c = test_states[layer]
        row = {"raw": quality(F.cosine_similarity(u.unsqueeze(1), c, dim=-1), test_encoder, test_positions)}
        for name, batch, epochs in (("head, one pass", args.batch, 1), (f"head, {args.epochs} passes", 32, args.epochs)):
            heads = fit_heads(*train_states[layer], train_positions, args.head_size, batch, args.lr, epochs, temperature)
            with torch.no_grad():
                scores = F.cosine_similarity(heads[0](u).unsqueeze(1), heads[1](c), dim=-1)
            row[name] = quality(scores, test_encoder, test_positions)
        table["layers"][layer] = row
        print(f"layer {layer:3d}: " + " | ".join(
            f"{name} NDCG@10 {q['ndcg@10']:.4f} Spearman {q['spearman_with_encoder']:+.3f}" for name, q in row.items()),
            flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    names = list(next(iter(table["layers"].values())))
    lines = [f"RSLLM's states layer by layer: {users} test users' lists of {lists.shape[1]}, heads of "
             f"{args.head_size} fitted on {len(rows)} training rows' frozen states "
             f"(`python benchmarks/rsllm_states.py --run <run> --train_rows {args.train_rows}`). "
             f"{config['sequential_encoder']} on the same lists: NDCG@10 {table['encoder']['ndcg@10']:.4f}.", "",
             "| layer | " + " | ".join(f"{n}: NDCG@10 | {n}: Spearman with the encoder" for n in names) + " |",
             "|---" * (1 + 2 * len(names)) + "|"]
    for layer, row in table["layers"].items():
        label = f"{layer} (input)" if layer == 0 else f"{layer} (final norm)" if layer == n_layers else str(layer)
        lines.append(f"| {label} | " + " | ".join(
            f"{row[n]['ndcg@10']:.4f} | {row[n]['spearman_with_encoder']:+.3f}" for n in names) + " |")
    lines.append("")
    lines.append(f"Wall: {time.time() - start:.0f} s.")
    (out / "rsllm_states.md").write_text("\n".join(lines) + "\n")
    (out / "rsllm_states.json").write_text(json.dumps({"args": vars(args), **table}, indent=1) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
