"""A tiny random causal LM for tests: a Llama config with random weights and a byte-level BPE
tokenizer trained on the dataset's own text. Real transformers code paths, seconds on a CPU.

    python scripts/make_tiny_llm.py OUT_DIR --dataset ml-100k
"""

from pathlib import Path

import torch

SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", "<pad>"]


def train_tokenizer(texts, vocab_size=1024):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    # The answer words appear often enough to become single tokens, with and without a leading space.
    answers = ["Yes", "No", " Yes", " No"] * 50
    tokenizer.train_from_iterator(list(texts) + answers, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, unk_token="<unk>", bos_token="<s>", eos_token="</s>", pad_token="<pad>"
    )


def build_tiny_llm(texts, out_dir, hidden_size=64, layers=2, heads=4, kv_heads=2, vocab_size=1024, seed=0):
    """Write a tiny Llama (random weights) and its tokenizer to ``out_dir``; returns the path."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = train_tokenizer(texts, vocab_size)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=2 * hidden_size,
        num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
        max_position_embeddings=2048, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    out = Path(out_dir)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def dataset_texts(dataset, config):
    """The dataset's item titles and the words of its prompt template (a tokenizer should know both)."""
    titles = [dataset.item_title(i) for i in range(1, dataset.item_num)]
    template = config["prompt_template"] or ""
    return titles + [template.replace("{history}", "").replace("{target}", "")] * 20
