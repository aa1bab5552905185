"""Why does (or doesn't) an LLM model learn? One instrumented training of any LLM model, on its own rows.

    python benchmarks/diagnose.py --model Laser                  # the embedded next-item default
    python benchmarks/diagnose.py --model RSLLM                  # the embedded candidate default
    python benchmarks/diagnose.py --model TALLRec                # the embedded labeled default, with TALLRec
    python benchmarks/diagnose.py --model CoLLM --config_files my.yaml --out diag/   # any data; --key=value options

In one process, on the run's own split and its fixed test rows (``eval_rows``):

* every optimizer step: the training loss beside **the trivial baseline of the task** (labeled: the binary entropy
  of the train label rate, what a constant predictor scores; next-item: ln of the item count, a uniform guess over
  every item; candidates: ln of the list size, a uniform guess over the list), the learning rate and **the gradient
  norm of each trainable group** (LoRA, the query generator, the projector, ...; after clipping, before the step);
* before the first step and after training: the task's own metrics (the trainer's evaluation) and **the spread of
  the scores** (labeled: the standard deviation of the answer logit; next-item: of each user's logits over all items;
  candidates: of each user's scores over its list), the share of test users whose top item is the same one;
* Laser (and any next-item model): **the anisotropy of its vectors**: the mean cosine between item vectors and
  between user vectors, and the share of the item matrix's energy in its first 3 principal directions (uncentred);
* RSLLM (and any model whose prompt lists answers): **the Spearman correlation of a candidate's score with the token
  count of its answer**, per list, averaged over the test users;
* a candidate-task model with a frozen encoder: **the Spearman correlation of its scores with the encoder's** on the
  same list, averaged over the test users (how much of what it reads reaches its ranking).

Validation is skipped (the run trains its epochs and is scored with its last weights). Writes ``diagnosis.json``,
``diagnosis.md`` and ``diagnosis.png`` (the loss per step against the trivial baseline) into ``--out``.
CoRA's own probe of its per-pair delta is ``benchmarks/diagnose_cora.py``.
"""

import argparse
import json
import math
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="CoRA")
    parser.add_argument("--config_files", nargs="+", default=None, help="default: the model's embedded preset")
    parser.add_argument("--out", default=None, help="default: diagnosis-<model>")
    parser.add_argument("--users", type=int, default=None, help="score at most this many test rows/users")
    return parser.parse_known_args(argv)


def group_of(name):
    """The trainable group a parameter's gradient is counted in."""
    if "lora_" in name or ".lora." in name or name.startswith("lora."):
        return "LoRA" if name.startswith("llm.") else name.split(".")[0] + " (LoRA)"
    return name.split(".")[0]


def trivial_loss(config, train_data, model):
    """The loss a predictor that learns nothing scores on the task (see the module docstring)."""
    task = config["task"]
    if task == "labeled":
        p = float(train_data._dataset.inter_feat[config["LABEL_FIELD"]].float().mean())
        return -(p * math.log(p) + (1 - p) * math.log(1 - p)), f"binary entropy of the label rate {p:.3f}"
    if task == "next_item":
        n = model.n_items - 1
        return math.log(n), f"ln {n} (uniform over the items)"
    n = int(config["train_candidate_count"] or config["candidate_count"])
    return math.log(n), f"ln {n} (uniform over a list)"


def spearman(a, b):

    ra, rb = a.argsort().argsort().double(), b.argsort().argsort().double()
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denominator = float(ra.norm() * rb.norm())
    return float((ra * rb).sum()) / denominator if denominator else float("nan")


def mean_pair_cosine(vectors, limit=512):
    import torch

    flat = torch.nn.functional.normalize(vectors[:limit].float(), dim=-1)
    cosine = flat @ flat.t()
    n = len(flat)
    return float((cosine.sum() - cosine.diagonal().sum()) / (n * (n - 1)))


def score_stats(model, trainer, config, test_data, rows):
    """The spread of the model's raw scores on ``rows`` of the test split, per task (module docstring)."""
    import torch

    from recbole_cora.data.candidates import candidate_lists
    from recbole_cora.tasks import candidate_scores
    from recbole_cora.training.sampling import row_loader

    task = config["task"]
    stats = {}
    model.eval()
    loader = row_loader(test_data, rows, config["eval_batch_size"], shuffle=False, seed=config["seed"])
    with torch.no_grad():
        if task == "labeled":
            scores = torch.cat([model.forward(batch.to(trainer.device)).float().view(-1).cpu() for batch in loader])
            stats.update(score_std=float(scores.std()), score_mean=float(scores.mean()))
        elif task == "next_item":
            spreads, tops, users = [], [], []
            for batch in loader:
                logits = model.full_sort_predict(batch.to(trainer.device)).float().cpu()
                logits[:, 0] = float("-inf")
                finite = logits[:, 1:]
                spreads.append(finite.std(dim=1))
                tops.append(logits.argmax(dim=1))
                users.append(model.user_vectors(batch.to(trainer.device))[0].float().cpu())
            tops = torch.cat(tops)
            stats.update(score_std=float(torch.cat(spreads).mean()),
                         same_top_item=float((tops == tops.mode().values).float().mean()))
            matrix = model.item_head(model.item_matrix[1:]).float().cpu()  # the item vectors as scored
            energy = torch.linalg.svdvals(matrix) ** 2
            stats.update(item_pair_cosine=mean_pair_cosine(matrix[torch.randperm(len(matrix), generator=torch.Generator().manual_seed(0))]),
                         user_pair_cosine=mean_pair_cosine(torch.cat(users)),
                         item_energy_top3=float(energy[:3].sum() / energy.sum()))
        else:
            lists = candidate_lists(config, test_data._dataset)
            spreads, tops, length_corr, agreement, position = [], [], [], [], 0
            encoder = model.reference_encoder() if hasattr(model, "reference_encoder") else None
            if not hasattr(encoder, "full_sort_predict"):
                encoder = None
            for batch in loader:
                batch_rows = torch.tensor(rows[position: position + len(batch)])
                position += len(batch)
                batch_lists = lists[batch_rows]
                scores = candidate_scores(model, batch.to(trainer.device), batch_lists.to(trainer.device)).double().cpu()
                spreads.append(scores.std(dim=1))
                tops.append(batch_lists[torch.arange(len(batch_lists)), scores.argmax(dim=1)])
                if encoder is not None:  # how much of the frozen encoder's ranking of the list the model keeps
                    reference = encoder.full_sort_predict(batch.to(trainer.device)).double().cpu().gather(1, batch_lists)
                    agreement += [v for v in (spearman(scores[k], reference[k]) for k in range(len(batch_lists))) if v == v]
                if hasattr(model, "prompts") and hasattr(model.prompts, "answer_ids"):
                    for k in range(len(batch_lists)):
                        lengths = torch.tensor([len(model.prompts.answer_ids(int(i))) for i in batch_lists[k]])
                        if lengths.unique().numel() > 1:
                            length_corr.append(spearman(scores[k], lengths))
            tops = torch.cat(tops)
            stats.update(score_std=float(torch.cat(spreads).mean()),
                         same_top_item=float((tops == tops.mode().values).float().mean()))
            if agreement:
                stats["spearman_score_vs_encoder_score"] = sum(agreement) / len(agreement)
            if length_corr:
                stats["spearman_score_vs_answer_length"] = sum(length_corr) / len(length_corr)
    return stats


def embedded_files(model):
    """The preset a diagnosis without config files runs: the model's task's embedded default (a labeled model runs on
    the labeled one, CoRA's data and sizes, as ``run_recbole_cora.py --compare`` does)."""
    import run_recbole_cora

    return run_recbole_cora.embedded_preset(model, None) or run_recbole_cora.embedded_preset(None, None)


def main(argv=None):
    args, overrides = parse_args(argv)
    from recbole.data import data_preparation
    from recbole.utils import init_seed

    import run_recbole_cora
    from recbole_cora.config import Config
    from recbole_cora.stages import prepare_stages
    from recbole_cora.utils import create_dataset, get_model, get_trainer

    files = args.config_files or [embedded_files(args.model)]
    out = Path(args.out or f"diagnosis-{args.model}")
    out.mkdir(parents=True, exist_ok=True)
    config = Config(args.model, None, files, {"state": "WARNING", "show_progress": False}, overrides)
    scores_note = None
    if config["encoder_residual"]:
        # validation is skipped, so the residual's gate is never fitted and stays 0: the fused ranking would be the
        # frozen encoder's before and after training. The diagnosis scores the LLM's own score instead.
        config["encoder_residual"] = False
        scores_note = ("the LLM's own score (`encoder_residual` off here: validation is skipped, so its gate would "
                       "stay 0 and the ranking would be the frozen encoder's)")
    init_seed(config["seed"], config["reproducibility"])
    dataset = create_dataset(config)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    model_class = get_model(config["model"])
    prepare_stages(config, dataset, model_class)
    init_seed(config["seed"], config["reproducibility"])
    model = model_class(config, train_data._dataset)
    stages = model.training_stages()
    run_options = {key: config[key] for key in ("learning_rate", "epochs")}

    def trainer_for(stage):
        """The stage's trainer, as the pipeline makes it (run_recbole_cora): the stage's own rate and epochs."""
        if stage is not None:
            model.set_stage(stage)
            for key, value in run_options.items():
                config[key] = config[f"stage{stage}_{key}"] or value
        made = get_trainer(config["MODEL_TYPE"], config["model"], config)(config, model)
        for key, value in run_options.items():
            config[key] = value
        return made

    trainer = trainer_for(stages[0])
    rows = list(trainer.eval_rows(test_data))[: args.users]
    baseline, baseline_text = trivial_loss(config, train_data, model)
    report = {"model": config["model"], "task": config["task"], "config_files": [Path(f).name for f in files],
              "overrides": overrides, "train_rows": len(train_data._dataset), "test_rows": len(rows),
              "trivial_loss": baseline, "trivial_loss_is": baseline_text, "scores": scores_note}
    started = time.time()

    def measure(trainer):
        if trainer.item_matrix is not None and not model.has_item_matrix:
            trainer.compute_item_matrix()
        result = {k: float(v) for k, v in trainer.evaluate_model(model, test_data).items()
                  if isinstance(v, (int, float))}
        return {"metrics": result, **score_stats(model, trainer, config, test_data, rows)}

    report["untrained"] = measure(trainer)
    steps, losses = [], []

    def on_forward(module, inputs, kwargs, output):
        if kwargs.get("return_loss") and module.training:
            losses.append(float(output.detach()))

    model.register_forward_hook(on_forward, with_kwargs=True)
    terms = {}
    if hasattr(model, "loss_terms"):  # a loss of several terms (RSLLM): each one per step, beside the total
        loss_terms = model.loss_terms

        def recorded_terms(interaction):
            result = loss_terms(interaction)
            if model.training:
                terms.clear()
                terms.update({name: float(value.detach()) for name, value in result.items()})
            return result

        model.loss_terms = recorded_terms
    named = {n: p for n, p in model.named_parameters()}

    def pre_step(opt, *_, stage=None):
        by_param = {p: n for n, p in named.items()}
        norms = {}
        for group in opt.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    key = group_of(by_param.get(p, "?"))
                    norms[key] = norms.get(key, 0.0) + float(p.grad.detach().float().pow(2).sum())
        steps.append({"step": len(steps) + 1, "stage": stage, "loss": losses[-1] if losses else float("nan"),
                      "lr": float(opt.param_groups[0]["lr"]), "grad": {k: math.sqrt(v) for k, v in sorted(norms.items())},
                      "terms": dict(terms)})

    start = time.time()
    for k, stage in enumerate(stages):  # CoLLM's steps, Laser's and RSLLM's stages, one after the other
        if k:
            trainer = trainer_for(stage)
        optimizer = trainer.optimizer.optimizer if hasattr(trainer.optimizer, "optimizer") else trainer.optimizer
        optimizer.register_step_pre_hook(lambda opt, *a, stage=stage: pre_step(opt, stage=stage))
        trainer.fit(train_data, None, saved=False, show_progress=config["show_progress"])
    report["train_seconds"] = round(time.time() - start, 1)
    report["steps"] = steps
    report["trained"] = measure(trainer)
    report["seconds"] = round(time.time() - started, 1)
    (out / "diagnosis.json").write_text(json.dumps(report, indent=1))
    text = markdown(report)
    (out / "diagnosis.md").write_text(text)
    plot(report, out / "diagnosis.png")
    print(text)
    print(f"(written to {out})")


def markdown(report):
    command = " ".join([f"--model {report['model']}"] + report["overrides"])
    lines = [f"# Diagnosis of {report['model']} ({report['task']} task; {', '.join(report['config_files'])})", "",
             f"Command: `python benchmarks/diagnose.py {command}`. Train rows {report['train_rows']}, test "
             f"rows/users {report['test_rows']}; training {report['train_seconds']} s, all {report['seconds']} s."
             + (f" Scored: {report['scores']}." if report.get("scores") else ""), ""]
    keys = sorted(set(report["untrained"]) - {"metrics"} | set(report["trained"]) - {"metrics"})
    metrics = sorted(set(report["untrained"]["metrics"]) & set(report["trained"]["metrics"]))
    lines += ["| measure | untrained | trained |", "|---|---|---|"]
    for key in metrics:
        lines.append(f"| {key} | {report['untrained']['metrics'][key]:.4f} | {report['trained']['metrics'][key]:.4f} |")
    for key in keys:
        before, after = report["untrained"].get(key, float("nan")), report["trained"].get(key, float("nan"))
        lines.append(f"| {key} | {before:.4f} | {after:.4f} |")
    groups = sorted({g for s in report["steps"] for g in s["grad"]})
    names = loss_term_names(report)
    lines += ["", f"Trivial loss: {report['trivial_loss']:.4f} ({report['trivial_loss_is']})."
              + (" The loss is the sum of weighted terms; each term is shown unweighted." if names else ""), "",
              "| step | loss | " + "".join(f"{n} | " for n in names) + "lr | "
              + " | ".join(f"grad {g}" for g in groups) + " |",
              "|---|---|" + "---|" * len(names) + "---|" + "---|" * len(groups)]
    for s in report["steps"]:
        lines.append(f"| {s['step']} | {s['loss']:.4f} | "
                     + "".join(f"{s.get('terms', {}).get(n, float('nan')):.4f} | " for n in names)
                     + f"{s['lr']:.2e} | " + " | ".join(f"{s['grad'].get(g, 0.0):.3e}" for g in groups) + " |")
    return "\n".join(lines) + "\n"


def loss_term_names(report):
    """The names of the loss's terms recorded per step (RSLLM: lm, user_item, id_text), in order of appearance."""
    names = []
    for step in report["steps"]:
        names += [n for n in step.get("terms", {}) if n not in names]
    return names


def plot(report, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    steps = [s["step"] for s in report["steps"]]
    axes[0].plot(steps, [s["loss"] for s in report["steps"]], marker=".", label="training loss (batch)")
    for name in loss_term_names(report):
        axes[0].plot(steps, [s.get("terms", {}).get(name, float("nan")) for s in report["steps"]], marker=".",
                     linewidth=0.8, label=f"term {name} (unweighted)")
    axes[0].axhline(report["trivial_loss"], color="grey", linestyle="--", label=f"trivial: {report['trivial_loss_is']}")
    axes[0].set(xlabel="optimizer step", ylabel="loss", title=f"{report['model']}: loss")
    axes[0].legend(fontsize=7)
    for group in sorted({g for s in report["steps"] for g in s["grad"]}):
        axes[1].plot(steps, [s["grad"].get(group, float("nan")) for s in report["steps"]], marker=".", label=group)
    axes[1].set(xlabel="optimizer step", ylabel="gradient norm", title="per trainable group", yscale="log")
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
