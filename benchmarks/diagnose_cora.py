"""Why does (or doesn't) CoRA learn on a run? One instrumented training of a labeled LLM model, with the figures
issue 14 asks for, on the run's own rows:

    python benchmarks/diagnose_cora.py                                   # the embedded default (CoRA, SmolLM2)
    python benchmarks/diagnose_cora.py --answer_score=yes_minus_no       # any --key=value of run_recbole_cora.py
    python benchmarks/diagnose_cora.py --config_files my.yaml --out diag/

Measured, in one process, on the run's fixed test rows (``eval_rows``) and a fixed probe batch of training rows:
  * the zero-shot scores (the frozen LLM alone, ``zero_shot()``) and the frozen CF encoder's: AUC all / warm / cold;
  * every optimizer step: the loss, the learning rate, the gradient norms of P (all target modules) and of the
    query generator (after clipping, before the step), the clipping factor;
  * after 0, 1, 3, 7, 15, ... optimizer steps and at the end: on the probe batch, the size of CoRA's delta per layer, ||(alpha/r) P_m(x A_b)|| /
    ||W_m x|| (median over the layer's q/k/v/o), and how much A_b differs between the batch's (user, item) pairs
    (mean cosine between pairs; 1 means every pair gets the same delta, i.e. no collaborative information);
  * after training: the model's test scores against the zero-shot scores (Pearson correlation, mean shift, ratio
    of standard deviations) and its AUC all / warm / cold.

The validation of ``fit`` is skipped (the run trains its epochs and is scored with its last weights, which for the
embedded default's one epoch is what the run reports). Writes ``diagnosis.json``, ``diagnosis.md`` and
``diagnosis.png`` (loss and learning rate per step, delta size per layer) into ``--out``.
"""

import argparse
import json
import math
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PRESET = ROOT / "properties" / "presets" / "embedded_default.yaml"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="CoRA")
    parser.add_argument("--config_files", nargs="+", default=[str(PRESET)])
    parser.add_argument("--out", default="diagnosis")
    parser.add_argument("--probe_rows", type=int, default=16, help="training rows of the probe batch")
    parser.add_argument("--zero_shot_only", action="store_true", help="only the zero-shot and CF encoder rows")
    return parser.parse_known_args(argv)


def auc_groups(scores, labels, warm):
    from sklearn.metrics import roc_auc_score

    out = {}
    for name, mask in (("all", warm == warm), ("warm", warm > 0.5), ("cold", warm <= 0.5)):
        y, s = labels[mask], scores[mask]
        out[name] = float(roc_auc_score(y, s)) if len(set(y.tolist())) == 2 else float("nan")
    out["warm_share"] = float((warm > 0.5).float().mean())
    return out


def pair_cosine(vectors):
    """Mean cosine similarity between the rows of ``vectors`` (flattened per row), the diagonal left out."""
    import torch

    flat = torch.nn.functional.normalize(vectors.detach().flatten(1).float(), dim=-1)
    cosine = flat @ flat.t()
    n = len(flat)
    return float((cosine.sum() - cosine.diagonal().sum()) / (n * (n - 1)))


def main(argv=None):
    args, overrides = parse_args(argv)
    import torch
    from recbole.data import data_preparation
    from recbole.utils import init_seed

    from recbole_cora.config import Config
    from recbole_cora.stages import prepare_stages
    from recbole_cora.utils import create_dataset, get_model, get_trainer

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    config = Config(args.model, None, args.config_files, {"state": "WARNING", "show_progress": False}, overrides)
    init_seed(config["seed"], config["reproducibility"])
    dataset = create_dataset(config)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    model_class = get_model(config["model"])
    prepare_stages(config, dataset, model_class)
    init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
    model = model_class(config, train_data._dataset)
    trainer = get_trainer(config["MODEL_TYPE"], config["model"], config)(config, model)
    report = {"overrides": overrides, "model": config["model"], "train_rows": len(train_data._dataset)}
    started = time.time()

    def scored(struct):
        return struct.get("rec.score").view(-1), struct.get("data.label").view(-1), struct.get("data.warm").view(-1)

    from recbole_cora.training.sampling import row_loader

    rows = trainer.eval_rows(test_data)  # sorted: the order score_rows returns them in

    @torch.no_grad()
    def raw_scores(scorer):
        """The raw scores (the answer logit, before the sigmoid that ``predict`` applies) of the test rows."""
        loader = row_loader(test_data, rows, config["eval_batch_size"], shuffle=False, seed=config["seed"])
        forward = getattr(scorer, "forward", None) if scorer is model else None
        return torch.cat([(forward(batch) if forward else scorer.predict(batch)).float().view(-1) for batch in loader])

    # ------------------------------------------------------------------ before training
    model.eval()
    feat = test_data._dataset.inter_feat[torch.as_tensor(rows)]
    labels, warm = feat[config["LABEL_FIELD"]].float(), feat[config["WARM_FIELD"] or "warm"].float()
    with model.zero_shot():
        zero = raw_scores(model)
    zero_p = torch.sigmoid(zero)  # float32, as the pipeline scored before its probabilities became float64
    report["zero_shot"] = auc_groups(zero, labels, warm)
    report["zero_shot_from_probabilities"] = auc_groups(zero_p, labels, warm)  # ties where the sigmoid saturates
    report["zero_shot_score"] = {"mean": float(zero.mean()), "std": float(zero.std()),
                                 "distinct_probabilities": len(set(zero_p.tolist())), "rows": len(zero_p)}
    reference = model.reference_encoder()
    if reference is not None:
        ref, _, _ = scored(trainer.score_rows(reference, test_data))
        report["cf_encoder"] = {"name": reference.cf_model, **auc_groups(ref, labels, warm)}
    report["zero_shot_seconds"] = round(time.time() - started, 1)

    if args.zero_shot_only:
        (out / "zero_shot.json").write_text(json.dumps(report, indent=1))
        print(json.dumps(report, indent=1))
        return
    probe = train_data.collate_fn(list(range(args.probe_rows)))
    probe = probe[0] if isinstance(probe, tuple) else probe
    has_delta = hasattr(model, "lora") and hasattr(model.lora, "P") and hasattr(model, "lora_factors")

    @torch.no_grad()
    def delta_sizes():
        """Per layer: median over its target modules of ||delta|| / ||W x|| on the probe batch; A_b's spread."""
        was = model.training
        model.eval()
        sizes, handles = {}, []
        for name, module in model.lora.targets.items():
            key = model.lora._key(name)

            def hook(mod, inputs, output, key=key, name=name):
                xa, B = model.lora.factors(key, inputs[0])
                delta = model.lora.scaling * torch.matmul(xa, B.to(xa.dtype))
                base = output - delta.to(output.dtype)
                mask = attention_mask.unsqueeze(-1).to(output.dtype)
                layer = int(name.split("layers.")[1].split(".")[0]) if "layers." in name else -1
                sizes.setdefault(layer, []).append(float((delta * mask).norm() / (base * mask).norm()))

            handles.append(module.register_forward_hook(hook))
        try:
            input_ids, attention_mask = model.prompts.batch(probe)
            A = model.lora_factors(probe)
            with model.lora.weights(A):
                model.scorer(model.llm, input_ids, attention_mask)
        finally:
            for handle in handles:
                handle.remove()
        model.train(was)
        return {"per_layer": {k: sorted(v)[len(v) // 2] for k, v in sorted(sizes.items())},
                "A_pair_cosine": pair_cosine(A)}

    if hasattr(model, "cf_encoder"):  # how much the CF input itself differs between the probe's pairs
        user, item = model.cf_encoder(probe[model.USER_ID], probe[model.ITEM_ID])
        report["cf_input"] = {"pair_cosine": pair_cosine(torch.cat([user, item], dim=-1)),
                              "user_norm": float(user.norm(dim=-1).mean()), "item_norm": float(item.norm(dim=-1).mean())}
        if hasattr(model, "cf_input"):
            report["cf_input"]["model_input_pair_cosine"] = pair_cosine(torch.cat(model.cf_input(probe), dim=-1))

    # ------------------------------------------------------------------ training, instrumented
    steps, snapshots = [], {}
    losses = []

    def on_forward(module, inputs, kwargs, output):
        if kwargs.get("return_loss") and module.training:
            losses.append(float(output.detach()))

    model.register_forward_hook(on_forward, with_kwargs=True)
    optimizer = trainer.optimizer.optimizer if hasattr(trainer.optimizer, "optimizer") else trainer.optimizer
    named = {p: n for n, p in model.named_parameters() if p.requires_grad}

    def pre_step(opt, *_):
        norms = {"P": 0.0, "query_generator": 0.0, "other": 0.0}
        for group in opt.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                name = named.get(p, "")
                part = "P" if name.startswith("lora.P") else "query_generator" if name.startswith("query_generator") else "other"
                norms[part] += float(p.grad.detach().float().pow(2).sum())
        steps.append({"step": len(steps) + 1, "loss": losses[-1] if losses else float("nan"),
                      "lr": float(opt.param_groups[0]["lr"]), **{f"grad_{k}": math.sqrt(v) for k, v in norms.items()}})
        if has_delta and (len(steps) & (len(steps) - 1)) == 0:  # after the steps 1, 2, 4, 8, ... (before it: 0)
            snapshots[len(steps) - 1] = delta_sizes()

    optimizer.register_step_pre_hook(pre_step)
    start = time.time()
    trainer.fit(train_data, None, saved=False, show_progress=config["show_progress"])
    report["train_seconds"] = round(time.time() - start, 1)
    if has_delta:
        snapshots[len(steps)] = delta_sizes()
    report["steps"] = steps
    report["delta"] = snapshots

    # ------------------------------------------------------------------ after training
    model.eval()
    scores = raw_scores(model)
    scores_p = torch.sigmoid(scores)
    report["trained"] = auc_groups(scores, labels, warm)
    report["trained_from_probabilities"] = auc_groups(scores_p, labels, warm)
    if has_delta:  # A_b of every test row: how much the delta differs between pairs after training
        loader = row_loader(test_data, rows, config["eval_batch_size"], shuffle=False, seed=config["seed"])
        with torch.no_grad():
            A = torch.cat([model.lora_factors(batch) for batch in loader])
        report["test_A_pair_cosine"] = pair_cosine(A[:256])
    shift = scores - zero
    report["trained_vs_zero_shot"] = {
        "pearson": float(torch.corrcoef(torch.stack([scores, zero]))[0, 1]),
        "mean_shift": float(shift.mean()), "std_ratio": float(scores.std() / zero.std()),
        "mean_trained": float(scores.mean()), "mean_zero_shot": float(zero.mean()),
    }
    report["seconds"] = round(time.time() - started, 1)
    (out / "diagnosis.json").write_text(json.dumps(report, indent=1))
    text = markdown(report)
    (out / "diagnosis.md").write_text(text)
    plot(report, out / "diagnosis.png")
    print(text)
    print(f"(written to {out})")


def markdown(report):
    lines = [f"# Diagnosis of {report['model']} ({' '.join(report['overrides']) or 'the embedded default'})", ""]
    lines += ["| scores on the test rows | AUC all | warm | cold |", "|---|---|---|---|"]
    rows = [("zero-shot (frozen LLM)", report["zero_shot"])]
    if "cf_encoder" in report:
        rows.append((f"{report['cf_encoder']['name']} (frozen CF encoder)", report["cf_encoder"]))
    rows.append((f"{report['model']} after training", report["trained"]))
    rows.append(("(zero-shot, AUC of float32 sigmoid probabilities)", report["zero_shot_from_probabilities"]))
    rows.append((f"({report['model']}, AUC of float32 sigmoid probabilities)", report["trained_from_probabilities"]))
    for name, r in rows:
        lines.append(f"| {name} | {r['all']:.4f} | {r['warm']:.4f} | {r['cold']:.4f} |")
    t = report["trained_vs_zero_shot"]
    z = report["zero_shot_score"]
    lines += ["", f"Raw scores (answer logits) unless said. Zero-shot raw score mean {z['mean']:.3f}, std {z['std']:.3f}; "
              f"{z['distinct_probabilities']} distinct sigmoid probabilities over {z['rows']} rows."
              + (f" A_b cosine between test pairs after training: {report['test_A_pair_cosine']:.4f}."
                 if "test_A_pair_cosine" in report else "")]
    lines += ["", f"Warm share of the test rows: {report['zero_shot']['warm_share']:.3f}. Trained against zero-shot "
              f"scores: Pearson {t['pearson']:.4f}, mean {t['mean_zero_shot']:.3f} -> {t['mean_trained']:.3f} "
              f"(shift {t['mean_shift']:+.3f}), std ratio {t['std_ratio']:.3f}. Training {report['train_seconds']} s, "
              f"all {report['seconds']} s.", ""]
    if "cf_input" in report:
        c = report["cf_input"]
        lines += [f"CF input [e_u; e_i] on the probe batch: mean cosine between pairs {c['pair_cosine']:.4f} (norms: user "
                  f"{c['user_norm']:.3f}, item {c['item_norm']:.3f})"
                  + (f"; as the model reads it {c['model_input_pair_cosine']:.4f}" if "model_input_pair_cosine" in c else "")
                  + ".", ""]
    lines += ["| step | loss | lr | grad P | grad query generator |", "|---|---|---|---|---|"]
    for s in report["steps"]:
        lines.append(f"| {s['step']} | {s['loss']:.4f} | {s['lr']:.2e} | {s['grad_P']:.3e} | {s['grad_query_generator']:.3e} |")
    if report["delta"]:
        lines += ["", "| after step | A_b cosine between pairs | delta/base, median over layers | largest layer |",
                  "|---|---|---|---|"]
        for step, d in report["delta"].items():
            values = list(d["per_layer"].values())
            top = max(d["per_layer"], key=d["per_layer"].get)
            lines.append(f"| {step} | {d['A_pair_cosine']:.4f} | {sorted(values)[len(values) // 2]:.2e} | "
                         f"{top} ({d['per_layer'][top]:.2e}) |")
    return "\n".join(lines) + "\n"


def plot(report, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
    steps = [s["step"] for s in report["steps"]]
    axes[0].plot(steps, [s["loss"] for s in report["steps"]], marker=".")
    axes[0].set(xlabel="optimizer step", ylabel="training loss (batch)", title="loss")
    axes[1].plot(steps, [s["lr"] for s in report["steps"]], marker=".")
    axes[1].set(xlabel="optimizer step", ylabel="learning rate", title="schedule")
    for step, d in report["delta"].items():
        axes[2].plot(list(d["per_layer"]), list(d["per_layer"].values()), marker=".", label=f"after step {step}")
    axes[2].set(xlabel="layer", ylabel="||delta|| / ||W x||", title="CoRA's delta per layer", yscale="log")
    if report["delta"]:
        axes[2].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
