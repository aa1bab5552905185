"""The task heads on the LLM.

* labeled: Yes/No scoring. Only the last prompt position goes through the output head, and only the rows of the
  answer tokens (a 49k-row head costs as much as several layers; two rows cost nothing);
* next-item: ``hidden_at``, the last hidden state at one position per row (Laser's suffix token).
"""

import torch


def answer_token_ids(tokenizer, words=("Yes", "No"), after="#Answer:"):
    """The token id of each answer word as it would follow the text ``after`` (the prompt's end).

    Tokenizers differ in how a word after a space is split ("Yes" vs " Yes" vs "▁Yes"); this asks the
    tokenizer at hand. Raises a ValueError naming `answer_words` when a word is not one token there."""
    prefix = tokenizer.encode(after, add_special_tokens=False)
    space = "" if after[-1:].isspace() else " "
    ids = []
    for word in words:
        full = tokenizer.encode(after + space + word, add_special_tokens=False)
        if len(full) == len(prefix) + 1 and full[: len(prefix)] == prefix:
            ids.append(full[-1])
            continue
        alone = tokenizer.encode(word, add_special_tokens=False)
        if len(alone) == 1:
            ids.append(alone[0])
            continue
        raise ValueError(
            f"answer word '{word}' is not a single token for this tokenizer (after '{after}' it is "
            f"{tokenizer.convert_ids_to_tokens(full[len(prefix):])}). Set `answer_words` to two words that "
            "are single tokens for it, e.g. answer_words: [' yes', ' no'] or ['Yes', 'No']."
        )
    if len(set(ids)) != len(ids):
        raise ValueError(f"answer_words {list(words)} map to the same token {ids}: choose distinct words.")
    return ids


def last_position_answer_logits(llm, input_ids, attention_mask, answer_ids, inputs_embeds=None):
    """Logits of the answer tokens at each row's last real position (rows are right-padded).

    Returns a (batch, len(answer_ids)) tensor. The decoder runs without a KV cache. Give either
    ``input_ids`` or ``inputs_embeds`` (CoLLM replaces some input embeddings)."""
    trunk = llm.get_decoder()
    hidden = trunk(
        input_ids=input_ids, inputs_embeds=inputs_embeds, attention_mask=attention_mask, use_cache=False
    ).last_hidden_state
    last = attention_mask.sum(dim=1) - 1
    final = hidden[torch.arange(hidden.shape[0], device=hidden.device), last.to(hidden.device)]
    head = llm.get_output_embeddings()
    if head.weight.device.type == "meta":  # an offloaded head (device_map): its own forward brings its weights in
        logits = head(final.unsqueeze(1))[:, 0]
        return logits.index_select(-1, torch.as_tensor(answer_ids, device=logits.device)).float()
    index = torch.as_tensor(answer_ids, device=head.weight.device)
    logits = final.to(device=head.weight.device, dtype=head.weight.dtype) @ head.weight.index_select(0, index).t()
    if getattr(head, "bias", None) is not None:
        logits = logits + head.bias.index_select(0, index)
    return logits.float()


class AnswerScorer:
    """Score = the Yes logit minus the No logit at the last position (``answer_score: yes_minus_no``, the default:
    the log-odds of the two answers, free of the offset every logit of the vocabulary shares), or the Yes logit
    alone (``yes_logit``, CoRA's and CoLLM's code)."""

    def __init__(self, llm, tokenizer, config, prompt_end):
        words = config["answer_words"] or ["Yes", "No"]
        self.answer_ids = answer_token_ids(tokenizer, words, after=prompt_end)
        self.mode = config["answer_score"] or "yes_minus_no"  # its values are checked with the config (config.CHOICES)

    def __call__(self, llm, input_ids, attention_mask, inputs_embeds=None):
        logits = last_position_answer_logits(llm, input_ids, attention_mask, self.answer_ids, inputs_embeds)
        return logits[:, 0] if self.mode == "yes_logit" else logits[:, 0] - logits[:, 1]


def hidden_at(llm, inputs_embeds, attention_mask, positions):
    """The next-item head's read-out: the decoder's last hidden state at ``positions`` (one per row), no KV cache.
    The output head is never run."""
    hidden = llm.get_decoder()(inputs_embeds=inputs_embeds, attention_mask=attention_mask, use_cache=False).last_hidden_state
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), positions.to(hidden.device)]
