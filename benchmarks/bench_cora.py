"""CoRA speed and memory against the frozen LLM's own forward (the floor) and a naive paper-style reference.

    python benchmarks/bench_cora.py                      # tiny random LLM, CPU: seconds
    python benchmarks/bench_cora.py --llm smollm2        # the embedded SmolLM2-135M-Instruct
    python benchmarks/bench_cora.py --llm llama7b-shape --device cuda   # Llama-2-7B shape, random bf16 weights
    python benchmarks/bench_cora.py --json out.json      # also write every figure as JSON

One process, the same fixed batches (training rows of ml-100k, drawn once with the seed) for every
measurement; the measurements are interleaved batch by batch, in an order rotated every round (so that a noisy
machine hurts all of them alike), after --warmup rounds; the table shows medians over --steps batches.

Rows
  LLM floor          the frozen LLM's decoder on the prompts, only the last real position through the
                     answer rows of the head (recbole_cora.llm.scoring), no LoRA hooks active; the
                     token tensors are built before the clock starts
  CoRA forward       model.predict(interaction) in inference mode: prompt tensors (cached token ids),
                     CF encoder, query generator, per-sample LoRA hooks, scoring
  CoRA train step    zero_grad, loss through the accelerate-wrapped model's forward, backward, gradient
                     clipping, optimizer step: LLMTrainer's model and AdamW (the code `fit` runs)
  naive forward/step benchmarks/naive_cora.py on the same LLM and trained parts: tokenization per batch,
                     padding to the longest prompt of the whole batch set, a separate x A_b in every target
                     module, full-vocabulary logits at every position
  data loading       RecBole's collate of the batch's rows plus the prompt tensors (token ids cached, as
                     from the second epoch on), and the same with an empty token cache (the first epoch);
                     share = that time / (collate + CoRA train step)

Before timing, P (zero-initialised in CoRA, which would make the LoRA path a no-op) is filled with small
random values, and ours and the naive reference must give the same scores on the first batch.
"""

import argparse
import json
import logging
import math
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the checkout's recbole_cora, also when it is not installed
sys.path.insert(0, str(Path(__file__).resolve().parent))

QUIET = {"state": "WARNING", "show_progress": False}
# tiny: the small CoRA of the tests (tests/conftest.py SMALL_CORA); the others: CoRA's defaults (paper).
SMALL_QUERY_GENERATOR = {"query_layers": 1, "query_width": 32, "query_heads": 2, "num_queries": 2,
                         "lora_rank": 4, "lora_alpha": 8}
LLAMA7B = dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
               num_key_value_heads=32, head_dim=128, vocab_size=32000, max_position_embeddings=4096)
GOALS = {"cora_forward": 1.05, "cora_train_step": 2.2}
SHARE_GOAL = 0.05


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--llm", choices=["tiny", "smollm2", "llama7b-shape"], default="tiny")
    parser.add_argument("--batch-size", type=int, default=16, help="rows per batch (CoRA's train_batch_size: 16)")
    parser.add_argument("--steps", type=int, default=20, help="timed batches (distinct rows) per measurement")
    parser.add_argument("--warmup", type=int, default=3, help="untimed rounds before timing")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--json", default=None, metavar="PATH", help="also write the results as JSON")
    parser.add_argument("--workdir", default=None,
                        help="RecBole writes log/ and saved/ here (default: a temporary folder, removed after)")
    parser.add_argument("--llm-cache-dir", default=None,
                        help="where the SmolLM2 GGUF is kept dequantised (default: ~/.cache/recbole_cora/llm_cache)")
    parser.add_argument("--llm-layers", type=int, default=None,
                        help="llama7b-shape only: fewer decoder layers (a smoke run on a small machine)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--p-std", type=float, default=0.02, help="std of the random P filled in before timing")
    parser.add_argument("--seed", type=int, default=2020)
    return parser.parse_args(argv)


# ------------------------------------------------------------------------------------------------ memory
def _proc_status(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024  # kB -> MiB
    return float("nan")


class PeakMemory:
    """Peak memory of one call, measured in a pass of its own after the timed rounds (one call per
    measurement, so that nothing done for measuring memory slows a timed call).

    CUDA: torch.cuda.max_memory_allocated, reset before the call. CPU: the process's peak RSS (VmHWM),
    reset to the current RSS through /proc/self/clear_refs after glibc's malloc_trim has handed freed memory
    back to the system (otherwise a call that reuses memory freed earlier shows no growth); where the kernel
    refuses the reset, the lifetime peak (getrusage). MiB; ``delta`` is the peak minus what was in use
    just before the call."""

    def __init__(self, device):
        self.cuda = device.type == "cuda"
        self.can_reset = False
        self.trim = None
        if not self.cuda:
            try:
                with open("/proc/self/clear_refs", "w") as f:
                    f.write("5")
                self.can_reset = True
            except OSError:
                pass
            try:
                import ctypes

                self.trim = ctypes.CDLL("libc.so.6").malloc_trim
            except (OSError, AttributeError):
                pass
        self.source = "torch.cuda.max_memory_allocated" if self.cuda else (
            ("peak RSS, reset per call" + (" after malloc_trim" if self.trim else "")) if self.can_reset
            else "peak RSS since start (getrusage)")

    def __enter__(self):
        import gc

        import torch

        gc.collect()
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated() / 2**20
        else:
            if self.trim is not None:
                self.trim(0)
            if self.can_reset:
                with open("/proc/self/clear_refs", "w") as f:
                    f.write("5")
            self.base = _proc_status("VmRSS")
        return self

    def __exit__(self, *exc):
        import torch

        if self.cuda:
            torch.cuda.synchronize()
            self.peak = torch.cuda.max_memory_allocated() / 2**20
        elif self.can_reset:
            self.peak = _proc_status("VmHWM")
        else:
            self.peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        self.delta = max(0.0, self.peak - self.base)
        return False


# ------------------------------------------------------------------------------------------------ building
def llm_cache_dir(args):
    if args.llm_cache_dir:
        return str(Path(args.llm_cache_dir).resolve())
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return str(base / "recbole_cora" / "llm_cache")


def build(args, device):
    """(config, CoRA model, train loader) built as the pipeline builds them (quick_start.run_recbole_cora)."""
    from recbole.data import data_preparation
    from recbole.utils import init_seed

    from recbole_cora.config import Config
    from recbole_cora.llm.tiny import build_tiny_llm, dataset_texts
    from recbole_cora.stages import run_cf_stage
    from recbole_cora.utils import create_dataset, get_model

    options = {**QUIET, "seed": args.seed, "train_batch_size": args.batch_size, "eval_batch_size": args.batch_size,
               "llm_cache_dir": llm_cache_dir(args)}
    if args.llm == "tiny":
        options.update(SMALL_QUERY_GENERATOR, cf_config={"epochs": 1, "embedding_size": 16})
    else:
        options.update(cf_config={"epochs": 1, "embedding_size": 256})  # the paper's CF width
    own_tokenizer = args.llm in ("tiny", "llama7b-shape")  # a BPE tokenizer trained on the dataset's titles
    if own_tokenizer:
        options["llm_path"] = str(Path("tiny_llm").resolve())  # written below, before the model is built
    if args.llm == "llama7b-shape":  # the tokenizer folder's config, reshaped, with random bf16 weights on the device
        shape = {**LLAMA7B, "num_hidden_layers": args.llm_layers or LLAMA7B["num_hidden_layers"]}
        options.update(llm_dtype="bfloat16", llm_init="random", llm_config_overrides=shape)
    model_name = "CoRA"
    config = Config(model_name, "ml-100k", config_dict=options)
    config["device"] = device
    init_seed(config["seed"], config["reproducibility"])
    dataset = create_dataset(config)
    if own_tokenizer:
        vocab = 1024 if args.llm == "tiny" else LLAMA7B["vocab_size"]
        build_tiny_llm(dataset_texts(dataset, config), config["llm_path"], vocab_size=vocab)
    train_data, _, _ = data_preparation(config, dataset)
    config["cf_stage_dir"] = str(run_cf_stage(config, dataset))
    init_seed(config["seed"], config["reproducibility"])
    model = get_model(model_name)(config, train_data._dataset).to(device)
    return config, model, train_data


# ------------------------------------------------------------------------------------------------ timing
def sync(device):
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def bf16_matmul_rate(device, n=8192, reps=20):
    """Measured dense bf16 matmul FLOP/s on this GPU (the MFU denominator)."""
    import torch

    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    sync(device)
    start = time.perf_counter()
    for _ in range(reps):
        a @ b
    sync(device)
    return 2 * n**3 * reps / (time.perf_counter() - start)


def llm_forward_flops(llm, lengths):
    """Model FLOPs of one forward of the LLM over prompts of these real lengths: 2 x (linear weights of
    the decoder) per token, plus causal attention (2 s^2 d per layer and prompt); the answer head's two
    rows are left out."""
    cfg = llm.config
    decoder = llm.get_decoder()
    linear = sum(m.weight.numel() for m in decoder.modules() if m.__class__.__name__ == "Linear")
    tokens = sum(lengths)
    attention = 2 * cfg.num_hidden_layers * cfg.hidden_size * sum(s * s for s in lengths)
    return 2 * linear * tokens + attention


def main(argv=None):
    args = parse_args(argv)
    if args.device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # accelerate (in LLMTrainer) would take a visible GPU
    import torch

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.llm == "llama7b-shape" and device.type != "cuda":
        print("note: llama7b-shape is only meaningful on a GPU (use --llm-layers for a CPU smoke run)", file=sys.stderr)
    workdir = Path(args.workdir).resolve() if args.workdir else None
    tmp = None
    if workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="bench_cora-")
        workdir = Path(tmp.name)
    workdir.mkdir(parents=True, exist_ok=True)
    cwd = os.getcwd()
    os.chdir(workdir)  # RecBole writes log/ and saved/ into the working directory
    try:
        result = run(args, device)
    finally:
        os.chdir(cwd)
        root = logging.getLogger()
        for handler in list(root.handlers):
            if isinstance(handler, logging.FileHandler):
                root.removeHandler(handler)
                handler.close()
        if tmp is not None:
            tmp.cleanup()
    print(markdown(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
        print(f"JSON written to {args.json}")
    return 0 if result["check"]["agree"] else 1


def run(args, device):
    import torch

    from recbole_cora.llm.scoring import last_position_answer_logits
    from recbole_cora.utils import get_trainer
    from naive_cora import NaiveCoRA

    t0 = time.perf_counter()
    config, model, train_data = build(args, device)
    build_seconds = time.perf_counter() - t0
    trainer = get_trainer(config["MODEL_TYPE"], config["model"], config)(config, model)
    device = next(p for p in model.parameters() if p.requires_grad).device
    llm_device = model.llm.get_input_embeddings().weight.device
    trainable = [p for p in model.parameters() if p.requires_grad]
    clip = config["clip_grad_norm"]

    # P starts at 0 (CoRA = the base LLM at step 0): give it values so that the LoRA path shows in the scores
    generator = torch.Generator().manual_seed(args.seed)
    with torch.no_grad():
        for p in model.lora.P.values():
            p.copy_(torch.randn(p.shape, generator=generator) * args.p_std)

    # the fixed batches: training rows drawn once with the seed
    n_rows = len(train_data._dataset)
    order = torch.randperm(n_rows, generator=torch.Generator().manual_seed(args.seed)).tolist()
    indices = [order[k * args.batch_size:(k + 1) * args.batch_size] for k in range(args.steps)]
    if len(indices[-1]) < args.batch_size:
        raise SystemExit(f"--steps {args.steps} x --batch-size {args.batch_size} is more than the {n_rows} training rows")

    def collate(idx):
        batch = train_data.collate_fn(idx)
        return batch[0] if isinstance(batch, tuple) else batch

    batches = [collate(idx) for idx in indices]
    tensors = [model.prompts.batch(b, llm_device) for b in batches]  # also fills the token cache
    real_lengths = [m.sum(dim=1).tolist() for _, m in tensors]
    real_tokens = [sum(lengths) for lengths in real_lengths]
    widths = [ids.shape[1] for ids, _ in tensors]
    pad_to = max(widths)  # the naive reference pads every batch to the longest prompt of the whole set
    naive = NaiveCoRA(model, pad_to)
    naive_optimizer = torch.optim.AdamW(
        trainable, lr=config["learning_rate"], weight_decay=config["weight_decay"] or 0.0
    )

    # ---- the same scores: ours and the naive reference on the first batch, dropout off
    naive.eval()  # (model.eval() too: naive holds the model)
    with torch.inference_mode():
        ours = model(batches[0]).float().cpu()
        theirs = naive(batches[0]).float().cpu()
        ids, mask = tensors[0]
        floor_scores = last_position_answer_logits(model.llm, ids, mask, model.scorer.answer_ids)[:, 0].float().cpu()
    float32 = model.llm.dtype == torch.float32
    scale = float(ours.abs().max())
    atol = 1e-3 + 1e-4 * scale if float32 else 0.1 + 0.02 * scale
    max_diff = float((ours - theirs).abs().max())
    check = {
        "max_abs_diff_ours_vs_naive": max_diff, "atol": atol, "agree": bool(max_diff <= atol),
        "max_abs_lora_effect": float((ours - floor_scores).abs().max()), "max_abs_score": scale,
        "llm_dtype": str(model.llm.dtype).replace("torch.", ""),
    }
    if not check["agree"]:
        print(f"ours and the naive reference disagree on the first batch: {check}", file=sys.stderr)

    # ---- the measured calls
    def floor(i):
        with torch.inference_mode():
            ids, mask = tensors[i]
            return last_position_answer_logits(model.llm, ids, mask, model.scorer.answer_ids)

    def cora_forward(i):
        model.eval()
        with torch.inference_mode():
            return model.predict(batches[i])

    def cora_factors(i):
        model.eval()
        with torch.inference_mode():
            return model.lora_factors(batches[i])

    def naive_forward(i):
        naive.eval()
        with torch.inference_mode():
            return torch.sigmoid(naive(batches[i]))

    def cora_train_step(i):
        trainer.wrapped.train()
        trainer.optimizer.zero_grad()
        loss = trainer.wrapped(batches[i], return_loss=True)
        trainer.accelerator.backward(loss)
        if clip:
            torch.nn.utils.clip_grad_norm_(trainable, **clip)
        trainer.optimizer.step()
        return loss.detach()

    def llm_forward_backward(i):
        # the floor of a training step: the frozen LLM forward and backward to its input activations (what any
        # method that trains something before or inside the LLM pays), no LoRA hooks active
        ids, mask = tensors[i]
        embeds = model.llm.get_input_embeddings()(ids).detach().requires_grad_(True)
        logits = last_position_answer_logits(model.llm, None, mask, model.scorer.answer_ids, inputs_embeds=embeds)
        logits[:, 0].float().sum().backward()
        return logits.detach()

    def cora_train_step_checkpointing(i):
        # switching is a walk over the LLM's modules, inside the timed call: negligible next to a step
        model.set_gradient_checkpointing(True)
        try:
            return cora_train_step(i)
        finally:
            model.release_adaptation()
            model.set_gradient_checkpointing(False)

    def cora_train_step_no_lora_dropout(i):
        p, model.lora.dropout.p = model.lora.dropout.p, 0.0
        try:
            return cora_train_step(i)
        finally:
            model.lora.dropout.p = p

    def naive_train_step(i):
        naive.train()
        naive_optimizer.zero_grad()
        loss = naive(batches[i], return_loss=True)
        loss.backward()
        if clip:
            torch.nn.utils.clip_grad_norm_(trainable, **clip)
        naive_optimizer.step()
        return loss.detach()

    def data_loading(i):
        return model.prompts.batch(collate(indices[i]), llm_device)

    def data_loading_first_epoch(i):
        # as in the first epoch: every prompt is tokenized (PromptBuilder has no public switch for its cache;
        # the full cache is put back so that the other measurements never tokenize)
        prompts = model.prompts
        cache, prompts._cache = prompts._cache, {}
        try:
            return prompts.batch(collate(indices[i]), llm_device)
        finally:
            prompts._cache = cache

    measured = {
        "llm_floor": floor, "cora_forward": cora_forward, "cora_factors": cora_factors,
        "cora_train_step": cora_train_step, "llm_forward_backward": llm_forward_backward,
        "cora_train_step_checkpointing": cora_train_step_checkpointing,
        "cora_train_step_no_lora_dropout": cora_train_step_no_lora_dropout,
        "naive_forward": naive_forward, "naive_train_step": naive_train_step,
        "data_loading": data_loading, "data_loading_first_epoch": data_loading_first_epoch,
    }
    collate_times = []
    times = {name: [] for name in measured}
    memory = PeakMemory(device)
    for round_ in range(args.warmup):
        for fn in measured.values():
            fn(round_ % args.steps)
        sync(device)
    names = list(measured)
    for i in range(args.steps):
        for name in names[i % len(names):] + names[:i % len(names)]:  # each takes its turn at going first
            fn = measured[name]
            sync(device)
            start = time.perf_counter()
            fn(i)
            sync(device)
            times[name].append(time.perf_counter() - start)
        start = time.perf_counter()
        collate(indices[i])
        collate_times.append(time.perf_counter() - start)

    peaks, deltas = {}, {}
    for name, fn in measured.items():  # memory: one more call of each, on the first batch
        with memory:
            fn(0)
        peaks[name], deltas[name] = memory.peak, memory.delta

    # ---- figures
    median = {name: statistics.median(values) for name, values in times.items()}
    mean_tokens = statistics.mean(real_tokens)
    collate_s = statistics.median(collate_times)
    rows = {}
    for name in measured:
        s = median[name]
        rows[name] = {
            "ms": s * 1e3, "ms_min": min(times[name]) * 1e3,
            "samples_per_s": args.batch_size / s, "tokens_per_s": mean_tokens / s,
            "peak_mib": peaks[name], "peak_delta_mib": deltas[name],
            "ratio_floor": None, "ratio_naive": None,
        }
    step_names = ("cora_train_step", "cora_train_step_checkpointing", "cora_train_step_no_lora_dropout")
    for name in ("cora_forward", "cora_factors", "naive_forward", "naive_train_step", "llm_forward_backward", *step_names):
        rows[name]["ratio_floor"] = median[name] / median["llm_floor"]
    for name in step_names:
        rows[name]["ratio_train_floor"] = median[name] / median["llm_forward_backward"]
    rows["cora_forward"]["ratio_naive"] = median["cora_forward"] / median["naive_forward"]
    rows["cora_train_step"]["ratio_naive"] = median["cora_train_step"] / median["naive_train_step"]
    step = collate_s + median["cora_train_step"]
    rows["data_loading"]["share_of_train_step"] = median["data_loading"] / step
    rows["data_loading_first_epoch"]["share_of_train_step"] = median["data_loading_first_epoch"] / step
    rows["data_loading"]["collate_ms"] = rows["data_loading_first_epoch"]["collate_ms"] = collate_s * 1e3

    padding = padding_of_training_batches(trainer, train_data, order[: 50 * args.batch_size * 4], args.batch_size)

    mfu = None
    if device.type == "cuda":
        peak_rate = bf16_matmul_rate(device)
        flops = statistics.mean(llm_forward_flops(model.llm, lengths) for lengths in real_lengths)
        mfu = {"bf16_matmul_tflops": peak_rate / 1e12, "llm_forward_gflop_per_batch": flops / 1e9}
        for name, factor in (("llm_floor", 1), ("cora_forward", 1), ("naive_forward", 1),
                             ("cora_train_step", 2), ("naive_train_step", 2), ("llm_forward_backward", 2)):
            # a frozen-LLM training step: the forward and a backward to the activations only (about 2 forwards)
            rows[name]["mfu"] = factor * flops / median[name] / peak_rate

    llm = model.llm
    meta = {
        "llm": args.llm, "llm_parameters": sum(p.numel() for p in llm.parameters()),
        "llm_layers": llm.config.num_hidden_layers, "d_model": llm.config.hidden_size,
        "vocab_size": llm.config.vocab_size, "llm_dtype": check["llm_dtype"],
        "trainable_parameters": sum(p.numel() for p in trainable),
        "lora_rank": config["lora_rank"],
        "query_generator": {k: config[k] for k in ("num_queries", "query_width", "query_layers", "query_heads")},
        "batch_size": args.batch_size, "steps": args.steps, "warmup": args.warmup,
        "device": str(device), "threads": torch.get_num_threads(), "torch": torch.__version__,
        "python": platform.python_version(), "machine": platform.machine(), "cpu_count": os.cpu_count(),
        "real_tokens_per_batch": mean_tokens, "mean_padded_width": statistics.mean(widths),
        "naive_padded_width": pad_to, "memory_source": memory.source, "build_seconds": build_seconds,
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
    }
    return {"meta": meta, "check": check, "rows": rows, "mfu": mfu, "padding": padding}


def padding_of_training_batches(trainer, train_data, rows, batch_size):
    """Padded positions as a share of all positions, over training batches of ``rows`` in random order and in
    the trainer's length-bucketed order (``length_bucketing: train_and_eval``): prompt lengths, no timing."""
    from recbole_cora.training.sampling import length_bucketed, prompt_lengths

    lengths = dict(zip(rows, prompt_lengths(trainer.model, train_data, rows)))

    def share(order):
        batches = [order[k:k + batch_size] for k in range(0, len(order), batch_size)]
        padded = sum(max(lengths[r] for r in b) * len(b) for b in batches)
        return 1 - sum(lengths.values()) / padded

    return {"rows": len(rows), "random": share(rows), "bucketed": share(length_bucketed(rows, [lengths[r] for r in rows], batch_size, trainer.config["seed"], 0))}


# ------------------------------------------------------------------------------------------------ table
LABELS = {
    "llm_floor": "LLM floor (last position, no LoRA)",
    "cora_forward": "CoRA forward (predict)",
    "cora_factors": "… of which A_b (CF look-up + query generator)",
    "cora_train_step": "CoRA train step",
    "llm_forward_backward": "LLM forward + backward to its inputs (floor of a train step)",
    "cora_train_step_checkpointing": "CoRA train step, gradient_checkpointing",
    "cora_train_step_no_lora_dropout": "CoRA train step, lora_dropout 0",
    "naive_forward": "naive forward",
    "naive_train_step": "naive train step",
    "data_loading": "data loading (cached token ids)",
    "data_loading_first_epoch": "data loading (first epoch: tokenize)",
}


def _num(value, fmt):
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, fmt)


def markdown(result):
    meta, rows, check = result["meta"], result["rows"], result["check"]
    gpu = result["mfu"] is not None
    lines = [
        f"CoRA benchmark: {meta['llm']} ({meta['llm_parameters'] / 1e6:,.1f}M parameters, {meta['llm_dtype']}, "
        f"{meta['llm_layers']} layers, d={meta['d_model']}), {meta['device']}"
        + (f" ({meta['gpu']})" if meta["gpu"] else f", {meta['threads']} threads")
        + f"; batch {meta['batch_size']}, median of {meta['steps']} batches after {meta['warmup']} warm-up rounds",
        f"prompts: {meta['real_tokens_per_batch'] / meta['batch_size']:.0f} real tokens per row on average; padded width "
        f"{meta['mean_padded_width']:.0f} per batch (ours) vs {meta['naive_padded_width']} (naive); memory: {meta['memory_source']}",
        "",
        "| measurement | ms/batch | samples/s | tokens/s | peak MiB (+during) | × floor | × naive | goal |"
        + (" MFU |" if gpu else ""),
        "|---|---:|---:|---:|---:|---:|---:|---|" + ("---:|" if gpu else ""),
    ]
    for name, label in LABELS.items():
        row = rows[name]
        goal = ""
        if name in GOALS:
            ok = row["ratio_floor"] <= GOALS[name]
            goal = f"≤ {GOALS[name]}× floor: {'yes' if ok else 'no'}"
        if row.get("ratio_train_floor") is not None:
            goal = (goal + "; " if goal else "") + f"{row['ratio_train_floor']:.2f}× the LLM's forward + backward"
        if "share_of_train_step" in row:
            share = row["share_of_train_step"]
            goal = f"{share:.1%} of a train step (goal < {SHARE_GOAL:.0%})"
        line = (
            f"| {label} | {row['ms']:.1f} | {row['samples_per_s']:.1f} | {row['tokens_per_s']:,.0f} | "
            f"{row['peak_mib']:,.0f} (+{row['peak_delta_mib']:,.0f}) | {_num(row['ratio_floor'], '.2f')} | "
            f"{_num(row['ratio_naive'], '.2f')} | {goal} |"
        )
        if gpu:
            line += f" {_num(row.get('mfu'), '.1%')} |"
        lines.append(line)
    lines.append("")
    lines.append(
        f"same scores: max |ours - naive| = {check['max_abs_diff_ours_vs_naive']:.2e} on the first batch "
        f"(tolerance {check['atol']:.1e}; {'agree' if check['agree'] else 'DISAGREE'}); the LoRA path moves the "
        f"scores by up to {check['max_abs_lora_effect']:.3f} (max |score| {check['max_abs_score']:.2f})"
    )
    pad = result["padding"]
    lines.append(
        f"padding of training batches ({pad['rows']} rows): {pad['random']:.1%} of positions in random order, "
        f"{pad['bucketed']:.1%} with length_bucketing: train_and_eval"
    )
    if gpu:
        m = result["mfu"]
        lines.append(
            f"MFU: LLM model FLOPs ({m['llm_forward_gflop_per_batch']:,.0f} GFLOP per batch forward, x2 for a train step) "
            f"/ time / measured bf16 matmul rate {m['bf16_matmul_tflops']:.0f} TFLOP/s"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
