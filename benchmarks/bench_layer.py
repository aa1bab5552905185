"""CoRA's cost per decoder layer at a given LLM shape: one layer, random weights, many repetitions.

    python benchmarks/bench_layer.py                                  # a Llama-2-7B layer in bfloat16
    python benchmarks/bench_layer.py --dtype float32 --hidden 576 --intermediate 1536 --heads 9 --kv-heads 3

bench_cora.py times whole models, where CoRA's fixed costs (query generator, optimizer) and, on a small
machine, the noise of a few long steps blur the per-layer figure; a 7B model does not fit a small machine at
all. This times one decoder layer of the shape (transformers' LlamaDecoderLayer, SDPA, causal) on a fixed
input, with CoRA's per-sample LoRA hooks (recbole_cora.llm.DynamicLoRA on q, k, v, o; random A_b and P) and
without, interleaved and in a rotating order, after warm-up; it prints medians:

  layer forward            the frozen layer, inference mode (the floor per layer)
  + CoRA forward           the same with the per-sample delta added in q, k, v and o
  layer forward+backward   forward with autograd and backward to the layer's input (the floor of a train step)
  + CoRA forward+backward  the same with the delta, backward to the input, to A_b and to P

The ratio of the CoRA rows to their floors is CoRA's overhead per layer, which is what a deep model
multiplies (32 layers of a 7B model), apart from the fixed costs that bench_cora.py shows.
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout's recbole_cora

DTYPES = ("float32", "bfloat16", "float16")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hidden", type=int, default=4096)
    parser.add_argument("--intermediate", type=int, default=11008)
    parser.add_argument("--heads", type=int, default=32)
    parser.add_argument("--kv-heads", type=int, default=32)
    parser.add_argument("--dtype", choices=DTYPES, default="bfloat16")
    parser.add_argument("--batch", type=int, default=4, help="rows (samples, each with its own A_b)")
    parser.add_argument("--seq", type=int, default=160, help="tokens per row")
    parser.add_argument("--rank", type=int, default=16, help="CoRA's lora_rank")
    parser.add_argument("--dropout", type=float, default=0.05, help="lora_dropout (forward+backward rows)")
    parser.add_argument("--reps", type=int, default=15, help="timed repetitions per row")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def main(argv=None):
    import torch
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaDecoderLayer, LlamaRotaryEmbedding

    from recbole_cora.llm import DynamicLoRA

    args = parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = getattr(torch, args.dtype)
    torch.manual_seed(args.seed)
    config = LlamaConfig(hidden_size=args.hidden, intermediate_size=args.intermediate, num_attention_heads=args.heads,
                         num_key_value_heads=args.kv_heads, num_hidden_layers=1, attn_implementation="sdpa")
    layer = LlamaDecoderLayer(config, layer_idx=0).to(device=device, dtype=dtype).eval().requires_grad_(False)
    rotary = LlamaRotaryEmbedding(config).to(device)
    x = torch.randn(args.batch, args.seq, args.hidden, device=device, dtype=dtype)
    positions = torch.arange(args.seq, device=device).unsqueeze(0).expand(args.batch, -1)
    cos_sin = rotary(x, positions)
    lora = DynamicLoRA(layer, rank=args.rank, alpha=2 * args.rank, dropout=args.dropout).to(device)
    with torch.no_grad():
        for p in lora.P.values():
            p.normal_(0, 0.02)
    A = torch.nn.functional.normalize(torch.randn(args.batch, args.hidden * args.rank, device=device), dim=-1)
    A = A.view(args.batch, args.hidden, args.rank).requires_grad_(True)

    def run(hidden):
        out = layer(hidden, position_embeddings=cos_sin, position_ids=positions)
        return out[0] if isinstance(out, tuple) else out

    def forward():
        lora.eval()
        with torch.inference_mode():
            return run(x)

    def cora_forward():
        lora.eval()
        with torch.inference_mode(), lora.weights(A.detach()):
            return run(x)

    def forward_backward():
        hidden = x.detach().requires_grad_(True)
        run(hidden)[:, -1].float().sum().backward()

    def cora_forward_backward():
        lora.train()
        hidden = x.detach().requires_grad_(True)
        with lora.weights(A):
            out = run(hidden)
        out[:, -1].float().sum().backward()
        A.grad = None
        lora.zero_grad(set_to_none=True)

    rows = {"layer forward": forward, "+ CoRA forward": cora_forward,
            "layer forward+backward": forward_backward, "+ CoRA forward+backward": cora_forward_backward}
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(args.warmup):
        for fn in rows.values():
            fn()
    times = {name: [] for name in rows}
    names = list(rows)
    for i in range(args.reps):
        for name in names[i % len(names):] + names[:i % len(names)]:
            sync()
            start = time.perf_counter()
            rows[name]()
            sync()
            times[name].append(time.perf_counter() - start)
    median = {name: statistics.median(v) * 1e3 for name, v in times.items()}
    floors = {"+ CoRA forward": "layer forward", "+ CoRA forward+backward": "layer forward+backward"}
    print(f"one decoder layer: d={args.hidden}, d_ff={args.intermediate}, {args.heads}/{args.kv_heads} heads, "
          f"{args.dtype}, {device}" + ("" if device.type == "cuda" else f" ({torch.get_num_threads()} threads)")
          + f"; {args.batch} rows x {args.seq} tokens, r={args.rank}, lora_dropout {args.dropout}; "
          f"median of {args.reps} after {args.warmup} warm-up rounds")
    print()
    print("| row | ms | min ms | × its floor |")
    print("|---|---:|---:|---:|")
    for name in rows:
        ratio = f"{median[name] / median[floors[name]]:.3f}" if name in floors else "–"
        print(f"| {name} | {median[name]:.1f} | {min(times[name]) * 1e3:.1f} | {ratio} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
