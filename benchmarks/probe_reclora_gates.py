"""How personal are RecLoRA's mixtures? For a finished RecLoRA run: on its test rows, how much the gates' mixing
weights alpha differ between samples, and how alike the frozen recommender's representations u are.

    python benchmarks/probe_reclora_gates.py saved/RecLoRA-<time>        # the run's folder (or its results folder)
    python benchmarks/probe_reclora_gates.py RUN --rows 500 --untrained  # also the gates at their initialisation

Printed per run (a table, and ``--out FILE.json``): the mean cosine between two samples' u, the same after each
gate's LayerNorm (what the gate's first Linear reads), and over modules and samples: the largest alpha, the
entropy of alpha against log N (1: uniform), and the mean total-variation distance between a sample's alpha and the
rows' mean alpha (0: every sample gets the same mixture, i.e. one shared LoRA; 1: disjoint mixtures).
"""

import argparse
import json
import math

import torch


def mixture_stats(model, batches):
    """The statistics above over ``batches`` (RecBole interactions) for ``model`` as it is."""
    reps, alphas, normed = [], [], []
    layer_norm = next(iter(model.gates.gates.values()))[0]  # the first module's gate: its LayerNorm
    with torch.no_grad():
        for interaction in batches:
            u = model.user_representation(interaction).float()
            reps.append(u)
            alphas.append(model.gates(u))
            normed.append(layer_norm(u))
    u, alpha, ln = torch.cat(reps), torch.cat(alphas), torch.cat(normed)  # alpha: (rows, modules, N)
    n = alpha.shape[-1]
    entropy = -(alpha * alpha.clamp_min(1e-12).log()).sum(-1) / math.log(n)
    tv = 0.5 * (alpha - alpha.mean(0, keepdim=True)).abs().sum(-1)
    return {"rows": len(u), "u_cosine": _mean_cosine(u), "u_cosine_after_layernorm": _mean_cosine(ln),
            "alpha_max": alpha.max(-1).values.mean().item(), "alpha_entropy": entropy.mean().item(),
            "alpha_tv_to_mean": tv.mean().item(), "meta_loras": n}


def _mean_cosine(x):
    x = torch.nn.functional.normalize(x, dim=-1)
    sim = x @ x.T
    k = len(x)
    return ((sim.sum() - sim.diagonal().sum()) / (k * (k - 1))).item()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run")
    parser.add_argument("--rows", type=int, default=500, help="test rows read (the first ones of the test split)")
    parser.add_argument("--untrained", action="store_true", help="also the gates re-initialised with the run's seed")
    parser.add_argument("--out", help="write the figures as JSON here")
    args = parser.parse_args(argv)

    from recbole_cora import load_run

    run = load_run(args.run, eval_rows=args.rows)
    model = run.model.eval()
    batches, seen = [], 0
    for batch in run.test_data:
        interaction = batch[0] if isinstance(batch, tuple) else batch
        batches.append(interaction)
        seen += len(interaction)
        if seen >= args.rows:
            break
    result = {"trained": mixture_stats(model, batches)}
    if args.untrained:
        torch.manual_seed(int(run.config["seed"]))
        for module in model.gates.modules():
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
        result["initialised"] = mixture_stats(model, batches)
    keys = list(result["trained"])
    print("| gates | " + " | ".join(keys) + " |\n|" + "---|" * (len(keys) + 1))
    for name, stats in result.items():
        print(f"| {name} | " + " | ".join(f"{v:.4f}" if isinstance(v, float) else str(v) for v in stats.values()) + " |")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
