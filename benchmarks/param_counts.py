"""Trainable parameters of CoRA at the paper's configuration (LightGCN width 256; query generator with 4
queries, width 512, 8 layers, 8 heads; LoRA on q, k, v, o) for r = 16 and r = 64, and of RecLoRA at its
paper's (N = 16 meta-LoRAs of r = 8 on q and v, gates over DIN's 256-d hidden state), against the LLM's own
size. Models are built on the meta device: shapes only, no memory, no weights.

    python benchmarks/param_counts.py
"""

import argparse

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from recbole_cora.llm.dynamic_lora import DynamicLoRA, MixtureLoRA
from recbole_cora.model.layers import CollaborativeQueryGenerator, MetaLoRAGates

SHAPES = {
    # LlamaConfig's defaults are Llama-2-7B (Vicuna-7B, the paper's LLM, has the same shape)
    "Llama-2-7B shape": LlamaConfig(),
    "SmolLM2-135M shape": LlamaConfig(
        vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
        num_attention_heads=9, num_key_value_heads=3, tie_word_embeddings=True,
    ),
}


def count(config, rank, cf_dim=256):
    with torch.device("meta"):
        llm = LlamaForCausalLM(config)
        lora = DynamicLoRA(llm, rank=rank, alpha=2 * rank)
        generator = CollaborativeQueryGenerator(2 * cf_dim, config.hidden_size, rank)
    llm_params = sum(p.numel() for p in llm.parameters())  # P lives in the DynamicLoRA module, not the LLM
    return llm_params, sum(p.numel() for p in generator.parameters()), sum(p.numel() for p in lora.parameters())


def count_reclora(config, rank=8, num_loras=16, representation=256, gate_hidden=256):
    with torch.device("meta"):
        llm = LlamaForCausalLM(config)
        lora = MixtureLoRA(llm, ["q_proj", "v_proj"], rank=rank, alpha=2 * rank, num_loras=num_loras)
        gates = MetaLoRAGates(lora.keys, representation, num_loras, hidden_size=gate_hidden)
    return sum(p.numel() for p in lora.parameters()), sum(p.numel() for p in gates.parameters())


def main():
    argparse.ArgumentParser(description=__doc__).parse_args()
    print("| LLM | LLM parameters | r | query generator | P (q,k,v,o) | trainable | trainable / LLM |")
    print("|---|---|---|---|---|---|---|")
    for name, config in SHAPES.items():
        for rank in (16, 64):
            llm, generator, p = count(config, rank)
            print(f"| {name} | {llm:,} | {rank} | {generator:,} | {p:,} | {generator + p:,} | {(generator + p) / llm:.2%} |")
    print()
    print("| LLM | RecLoRA: N meta-LoRAs, r (q, v) | meta-LoRA banks | gates | trainable | trainable / LLM |")
    print("|---|---|---|---|---|---|")
    for name, config in SHAPES.items():
        llm = count(config, 16)[0]
        bank, gates = count_reclora(config)
        print(f"| {name} | 16, 8 | {bank:,} | {gates:,} | {bank + gates:,} | {(bank + gates) / llm:.2%} |")


if __name__ == "__main__":
    main()
