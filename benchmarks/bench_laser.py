"""Laser's speed against the frozen LLM's own forward over the same sequences (the floor).

    python benchmarks/bench_laser.py                     # tiny random LLM on an ml-100k slice: seconds
    python benchmarks/bench_laser.py --llm smollm2       # the embedded SmolLM2-135M-Instruct on ml-100k

One process, the same fixed batches of training rows for every measurement, interleaved batch by batch after
--warmup rounds; the table shows medians over --steps batches.

Rows
  LLM floor (users)    the frozen decoder over exactly the input embeddings Laser builds for a batch of users
                       ([prefix; prompt; suffix], prepared before the clock starts), no M-Former, no read-out
  Laser user vectors   model.user_vectors in inference mode: prompt tensors (cached token ids), the frozen
                       sequential encoder, the M-Former, the decoder, the projection
  Laser train step     zero_grad, loss (InfoNCE over all items + load balancing) through the accelerate-wrapped
                       model's forward, backward, clipping, optimizer step: LLMTrainer's model and optimizer
  LLM floor (items)    the frozen decoder over a batch of item sequences ([prefix; one title; suffix])
  Laser item vectors   model.item_vectors for the same batch: what an item-matrix pass does per batch
  item-matrix pass     trainer.compute_item_matrix(): every item, once (seconds, and items/s)
"""

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

QUIET = {"state": "WARNING", "show_progress": False}
SMALL = {"mformer_layers": 2, "mformer_width": 32, "mformer_heads": 2, "num_queries": 4, "num_experts": 4,
         "user_vector_size": 32, "history_len": 5,
         "sequential_encoder_config": {"epochs": 1, "hidden_size": 16, "n_layers": 1, "n_heads": 1, "inner_size": 32}}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--llm", choices=["tiny", "smollm2"], default="tiny")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--workdir", default=None, help="where stages and caches go (default: a temporary folder)")
    return parser.parse_args(argv)


def build(args, workdir):
    import os

    import torch
    from recbole.data import data_preparation
    from recbole.utils import init_seed

    from recbole_cora.config import Config
    from recbole_cora.model.llm_recommender.laser import Laser
    from recbole_cora.stages import prepare_stages
    from recbole_cora.training import LLMTrainer
    from recbole_cora.utils import create_dataset

    os.chdir(workdir)
    if args.llm == "tiny":
        from helpers import SLICE_OPTIONS, ml100k_slice
        from recbole_cora.llm.tiny import build_tiny_llm, dataset_texts

        texts = Config("LightGCN", "ml-100k", config_dict=QUIET)
        llm_path = build_tiny_llm(dataset_texts(create_dataset(texts), texts), Path(workdir) / "tiny")
        options = {**QUIET, **SLICE_OPTIONS, **SMALL, "data_path": ml100k_slice(workdir), "llm_path": str(llm_path)}
        config = Config("Laser", "ml100k-slice", config_dict=options)
    else:  # the embedded next-item default's Laser
        preset = ROOT / "properties" / "presets" / "embedded_next_item.yaml"
        config = Config(config_file_list=[str(preset)], config_dict={**QUIET, "sequential_encoder_config": {"epochs": 1}})
    config["train_batch_size"] = config["eval_batch_size"] = args.batch_size
    init_seed(config["seed"], config["reproducibility"])
    dataset = create_dataset(config)
    train, _, _ = data_preparation(config, dataset)
    prepare_stages(config, dataset, Laser)
    torch.manual_seed(0)
    model = Laser(config, train._dataset)
    return config, model, LLMTrainer(config, model), train


def median_ms(values):
    return 1000 * statistics.median(values)


def main(argv=None):
    import torch

    args = parse_args(argv)
    workdir = args.workdir or tempfile.mkdtemp(prefix="bench_laser-")
    config, model, trainer, train = build(args, workdir)
    generator = torch.Generator().manual_seed(0)
    batches = [torch.randperm(len(train._dataset), generator=generator)[: args.batch_size].tolist()
               for _ in range(args.steps + args.warmup)]
    interactions = [train.collate_fn(rows) for rows in batches]
    start = time.perf_counter()
    trainer.compute_item_matrix()
    matrix_seconds = time.perf_counter() - start
    item_batches = [torch.randint(1, model.n_items, (args.batch_size,), generator=generator) for _ in batches]

    def inputs_of(history, token_rows):
        """The [prefix; prompt; suffix] embeddings and mask Laser's encode builds (captured from the decoder)."""
        seen = {}
        decoder = model.llm.get_decoder()
        handle = decoder.register_forward_pre_hook(
            lambda module, a, kw: seen.update(kw), with_kwargs=True)
        with torch.inference_mode():
            model.encode(history, token_rows)
        handle.remove()
        return seen["inputs_embeds"], seen["attention_mask"]

    user_inputs = [inputs_of(b["item_id_list"], model.prompts.token_ids(*model.prompts.rows(b, with_target=False)))
                   for b in interactions]
    item_inputs = [inputs_of(ids.view(-1, 1), model.prompts.token_ids([[int(i)] for i in ids], [0] * len(ids)))
                   for ids in item_batches]
    decoder = model.llm.get_decoder()
    times = {name: [] for name in ("floor_users", "users", "step", "floor_items", "items")}
    model.train()
    for k in range(len(batches)):
        runs = {
            "floor_users": lambda: decoder(inputs_embeds=user_inputs[k][0], attention_mask=user_inputs[k][1], use_cache=False),
            "users": lambda: model.user_vectors(interactions[k]),
            "floor_items": lambda: decoder(inputs_embeds=item_inputs[k][0], attention_mask=item_inputs[k][1], use_cache=False),
            "items": lambda: model.item_vectors(item_batches[k]),
        }
        for name, fn in runs.items():
            model.eval()
            with torch.inference_mode():
                start = time.perf_counter()
                fn()
                elapsed = time.perf_counter() - start
            if k >= args.warmup:
                times[name].append(elapsed)
        model.train()
        start = time.perf_counter()
        trainer.optimizer.zero_grad()
        loss = trainer.wrapped(interactions[k], return_loss=True)
        trainer.accelerator.backward(loss)
        trainer.accelerator.clip_grad_norm_(trainer.trainable_parameters(), max_norm=1.0)
        trainer.optimizer.step()
        if k >= args.warmup:
            times["step"].append(time.perf_counter() - start)
    ms = {name: median_ms(values) for name, values in times.items()}
    tokens = int(user_inputs[0][1].sum()) / args.batch_size
    item_tokens = int(item_inputs[0][1].sum()) / args.batch_size
    rows = [
        ("LLM floor (users)", ms["floor_users"], 1.0, ""),
        ("Laser user vectors", ms["users"], ms["users"] / ms["floor_users"], ""),
        ("Laser train step", ms["step"], ms["step"] / ms["floor_users"], ""),
        ("LLM floor (items)", ms["floor_items"], 1.0, ""),
        ("Laser item vectors", ms["items"], ms["items"] / ms["floor_items"], ""),
        ("item-matrix pass", 1000 * matrix_seconds, None, f"{model.n_items - 1:,} items, {(model.n_items - 1) / matrix_seconds:.1f} items/s"),
    ]
    print(f"Laser on {args.llm} ({model.llm.config.num_hidden_layers} layers, d={model.d_model}), batch {args.batch_size}, "
          f"{tokens:.0f} tokens per user row, {item_tokens:.0f} per item row, median of {args.steps} batches")
    print("| measurement | ms per batch | x floor | note |\n|---|---:|---:|---|")
    for name, value, ratio, note in rows:
        print(f"| {name} | {value:.1f} | {'' if ratio is None else f'{ratio:.2f}'} | {note} |")


if __name__ == "__main__":
    main()
