"""Can a frozen LLM's features separate ML-1M's likes from dislikes? A linear probe of TALLRec's ceiling.

    python benchmarks/tallrec_probe.py                       # ML-1M (CoLLM's protocol), SmolLM2-135M, 16 x 1,000 rows
    python benchmarks/tallrec_probe.py --epochs 4            # the rows of a shorter TALLRec run

TALLRec reads one thing: the LLM's last hidden state of its text prompt (the Yes/No logits are a linear function of
it), changed by LoRA on q and v. This probe freezes the LLM (TALLRec before its first step: its LoRA B is zero),
takes that last-position hidden state for exactly the training rows a TALLRec run of ``--epochs`` epochs of
``--rows_per_epoch`` draws (the trainer's own sampling), and fits a logistic regression on it (standardised, L2,
its strength chosen by 5-fold cross-validation on those rows). Scored on the fixed ``--eval_rows`` test rows of
``benchmarks/quality.py`` (the same as every model there), beside:

* the zero-shot score (Yes minus No logit of the same forward pass): what the LLM's own head reads;
* the smoothed positive rate of the target item on the same training rows: a feature-free popularity baseline;
* the probe on [hidden state, item rate]: whether the text adds anything to popularity.

If the probe is near the zero-shot AUC, the frozen features do not hold what TALLRec must learn, and LoRA on q/v has
to build it; if it is well above TALLRec's trained AUC, the limit is TALLRec's optimisation, not its features.

Resumable: features are saved per chunk in ``--work``. Writes ``probe.json`` and ``probe.md`` into ``--out``.
"""

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="ml-1m")
    parser.add_argument("--data_path", default=str(ROOT.parent / "shared" / "datasets"))
    parser.add_argument("--llm_path", default="smollm2-135m-instruct")
    parser.add_argument("--epochs", type=int, default=16)
    parser.add_argument("--rows_per_epoch", type=int, default=1000)
    parser.add_argument("--eval_rows", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--chunk", type=int, default=512, help="rows per saved feature file")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "quality" / "tallrec-probe"))
    parser.add_argument("--work", default=str(Path.home() / ".cache" / "recbole-cora-quality"))
    return parser.parse_args(argv)


def build(args):
    from recbole.data import data_preparation
    from recbole.utils import init_seed

    from recbole_cora.config import Config
    from recbole_cora.model.llm_recommender.tallrec import TALLRec
    from recbole_cora.utils import create_dataset

    work = Path(args.work)
    options = {"data_path": args.data_path, "llm_path": args.llm_path, "eval_rows": args.eval_rows,
               "train_rows_per_epoch": args.rows_per_epoch, "llm_cache_dir": str(work / "llm_cache"),
               "token_cache_dir": str(work / "token_cache"), "state": "WARNING", "show_progress": False}
    config = Config("TALLRec", args.dataset, config_file_list=[str(ROOT / "dataset_configs" / f"{args.dataset}.yaml")],
                    config_dict=options)
    init_seed(config["seed"], config["reproducibility"])
    dataset = create_dataset(config)
    train, valid, test = data_preparation(config, dataset)
    model = TALLRec(config, train._dataset).eval()
    return config, model, train, test


def training_rows(config, n_rows, epochs):
    """The rows a TALLRec run draws over ``epochs`` epochs (``LLMTrainer.train_rows``), without repeats."""
    import torch

    sample, seen = int(config["train_rows_per_epoch"]), []
    for epoch in range(epochs):
        generator = torch.Generator().manual_seed(int(config["seed"]) * 1000 + epoch)
        seen += torch.randperm(n_rows, generator=generator)[:sample].tolist()
    return sorted(set(seen))


def features(model, data, rows, name, args):
    """(last-position hidden state, zero-shot score, label, item id) of ``rows`` of ``data``, saved per chunk."""
    import torch
    from safetensors.torch import load_file, save_file
    from tqdm import tqdm

    from recbole_cora.llm.loading import execution_device
    from recbole_cora.llm.scoring import hidden_at

    folder = Path(args.work) / "tallrec-probe" / f"{args.dataset}-{name}-{len(rows)}"
    folder.mkdir(parents=True, exist_ok=True)
    head = model.llm.get_output_embeddings()
    yes, no = model.scorer.answer_ids[:2]
    parts = []
    for start in tqdm(range(0, len(rows), args.chunk), desc=f"features ({name})", ncols=100):
        path = folder / f"{start:07d}.safetensors"
        if not path.is_file():
            out = {"hidden": [], "score": [], "label": [], "item": []}
            chunk = rows[start: start + args.chunk]
            for k in range(0, len(chunk), args.batch):
                interaction = data._dataset[torch.tensor(chunk[k: k + args.batch])]
                device = execution_device(model.llm.get_input_embeddings())
                ids, mask = model.prompts.batch(interaction, device)
                with torch.no_grad():
                    embeds = model.llm.get_input_embeddings()(ids)
                    hidden = hidden_at(model.llm, embeds, mask, mask.sum(dim=1) - 1).float()
                    logits = head(hidden.to(head.weight.dtype)).float()
                out["hidden"].append(hidden.cpu())
                out["score"].append((logits[:, yes] - logits[:, no]).cpu())
                out["label"].append(interaction[model.LABEL].float())
                out["item"].append(interaction[model.ITEM_ID].long())
            save_file({key: torch.cat(value).contiguous() for key, value in out.items()}, str(path))
        parts.append(load_file(str(path)))
    return {key: torch.cat([p[key] for p in parts]) for key in parts[0]}


def item_rate(train_items, train_labels, items, prior=20.0, leave_out=None):
    """The target item's positive rate on the training rows, shrunk toward the overall rate by ``prior`` rows;
    ``leave_out``: the labels of ``items`` when they are the training rows themselves (each row's own label is left
    out of its rate, so the feature does not hold the answer)."""
    import numpy as np

    overall = float(train_labels.mean())
    size = int(max(train_items.max(), items.max())) + 1
    positives = np.bincount(train_items, weights=train_labels, minlength=size)[items]
    counts = np.bincount(train_items, minlength=size)[items].astype(float)
    if leave_out is not None:
        positives, counts = positives - leave_out, counts - 1
    return (positives + prior * overall) / (counts + prior)


def main(argv=None):
    import numpy as np
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.metrics import roc_auc_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from recbole_cora.data.rows import eval_row_subset

    args = parse_args(argv)
    started = time.time()
    config, model, train, test = build(args)
    train_rows = training_rows(config, len(train._dataset), args.epochs)
    test_rows = list(eval_row_subset(len(test._dataset), config))
    a = features(model, train, train_rows, "train", args)
    b = features(model, test, test_rows, "test", args)
    X, y, Xt, yt = a["hidden"].numpy(), a["label"].numpy(), b["hidden"].numpy(), b["label"].numpy()
    rate = item_rate(a["item"].numpy(), y, a["item"].numpy(), leave_out=y)
    rate_t = item_rate(a["item"].numpy(), y, b["item"].numpy())

    def probe(train_x, test_x):
        """(cross-validated AUC on the training rows at the chosen strength, test AUC)."""
        fit = make_pipeline(StandardScaler(), LogisticRegressionCV(Cs=8, cv=5, scoring="roc_auc", max_iter=2000))
        with warnings.catch_warnings():  # sklearn's notices about its own future defaults
            warnings.simplefilter("ignore")
            fit.fit(train_x, y)
            folds = next(iter(fit[-1].scores_.values()))  # (folds, Cs) AUCs
        return float(folds.mean(axis=0).max()), float(roc_auc_score(yt, fit.predict_proba(test_x)[:, 1]))

    hidden_train, hidden_test = probe(X, Xt)
    both_train, both_test = probe(np.hstack([X, rate[:, None]]), np.hstack([Xt, rate_t[:, None]]))
    result = {
        "dataset": args.dataset, "llm_path": args.llm_path, "train_rows": len(train_rows),
        "drawn_as": f"{args.epochs} epochs x {args.rows_per_epoch} rows (TALLRec's sampling, repeats removed)",
        "test_rows": len(test_rows), "train_positive_rate": float(y.mean()), "test_positive_rate": float(yt.mean()),
        "hidden_size": int(X.shape[1]),
        "test_auc": {"zero_shot (Yes - No logit)": float(roc_auc_score(yt, b["score"].numpy())),
                     "item positive rate (train rows, smoothed)": float(roc_auc_score(yt, rate_t)),
                     "probe: last hidden state": hidden_test, "probe: last hidden state + item rate": both_test},
        "cv_auc": {"probe: last hidden state": hidden_train, "probe: last hidden state + item rate": both_train},
        "seconds": round(time.time() - started, 1),
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "probe.json").write_text(json.dumps(result, indent=2))
    lines = [f"# A linear probe of the frozen LLM's last hidden state ({args.dataset}, {args.llm_path})", "",
             f"Train: {result['train_rows']} rows ({result['drawn_as']}); test: the fixed {result['test_rows']} rows.",
             f"Command: `python benchmarks/tallrec_probe.py --epochs {args.epochs} --rows_per_epoch {args.rows_per_epoch}`",
             "", "| score | test AUC | 5-fold AUC on the train rows |", "|---|---|---|"]
    for name, value in result["test_auc"].items():
        cv = result["cv_auc"].get(name)
        lines.append(f"| {name} | {value:.4f} | {'' if cv is None else f'{cv:.4f}'} |")
    (out / "probe.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
