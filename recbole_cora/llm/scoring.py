"""The task heads on the LLM.

* labeled: Yes/No scoring. Only the last prompt position goes through the output head, and only the rows of the
  answer tokens (a 49k-row head costs as much as several layers; two rows cost nothing);
* next-item: ``hidden_at``, the last hidden state at one position per row (Laser's suffix token);
* contrastive terms: ``cosines`` and ``info_nce`` of queries against per-row choices (RSLLM's user-item and ID-text
  terms), ``unique_first``.
"""

import functools
import inspect

import torch
import torch.nn.functional as F
from torch import nn


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


def last_position_answer_logits(llm, input_ids, attention_mask, answer_ids, inputs_embeds=None, update=None):
    """Logits of the answer tokens at each row's last real position (rows are right-padded).

    Returns a (batch, len(answer_ids)) tensor. The decoder runs without a KV cache. Give either
    ``input_ids`` or ``inputs_embeds`` (CoLLM replaces some input embeddings). ``update``: an ``AnswerHeadUpdate``
    whose output is added to the answer rows' logits (``answer_head: trainable``)."""
    trunk = llm.get_decoder()
    hidden = trunk(
        input_ids=input_ids, inputs_embeds=inputs_embeds, attention_mask=attention_mask, use_cache=False
    ).last_hidden_state
    last = attention_mask.sum(dim=1) - 1
    final = hidden[torch.arange(hidden.shape[0], device=hidden.device), last.to(hidden.device)]
    logits = _answer_rows(llm.get_output_embeddings(), final, answer_ids)
    if update is not None:
        logits = logits + update(final).to(logits.device)
    return logits


def _answer_rows(head, final, answer_ids):
    """The output head's logits of ``answer_ids`` for the hidden states ``final``, in float32."""
    if head.weight.device.type == "meta":  # an offloaded head (device_map): its own forward brings its weights in
        logits = head(final.unsqueeze(1))[:, 0]
        return logits.index_select(-1, torch.as_tensor(answer_ids, device=logits.device)).float()
    index = torch.as_tensor(answer_ids, device=head.weight.device)
    logits = final.to(device=head.weight.device, dtype=head.weight.dtype) @ head.weight.index_select(0, index).t()
    if getattr(head, "bias", None) is not None:
        logits = logits + head.bias.index_select(0, index)
    return logits.float()


class Standardiser(nn.Module):
    """A per-dimension standardisation of LLM hidden states, z = (h - mean) / spread, with the mean and variance of
    the first ``calibration_rows`` rows it is given (accumulated exactly by Chan et al.'s pairwise update, then
    fixed; buffers, so saved with the model). Before any row it is the identity. Float32 whatever the LLM's dtype.

    Why: an LLM's hidden state is a large part shared by every input plus small variations (SmolLM2-135M: norm about
    49, a dimension's spread over prompts about 0.11), so a linear map trained on it learns slowly along the
    variations and jumps along the shared part, and vectors projected from it are nearly parallel."""

    def __init__(self, d_model, calibration_rows=4096):
        super().__init__()
        self.calibration_rows = calibration_rows
        self.register_buffer("mean", torch.zeros(d_model))
        self.register_buffer("variance", torch.ones(d_model))
        self.register_buffer("rows_seen", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def reset(self):
        """Forget the statistics read so far (the identity again, until rows are folded in anew)."""
        self.mean.zero_()
        self.variance.fill_(1.0)
        self.rows_seen.zero_()

    @property
    def calibrated(self):
        return int(self.rows_seen) >= self.calibration_rows

    @torch.no_grad()
    def calibrate(self, hidden):
        """Fold rows (n, d) into the mean and variance, until ``calibration_rows`` rows have been seen."""
        hidden = hidden.detach().to(device=self.mean.device, dtype=torch.float32)
        seen, n = int(self.rows_seen), hidden.shape[0]
        if seen >= self.calibration_rows or n == 0:
            return
        batch_mean = hidden.mean(0)
        batch_m2 = ((hidden - batch_mean) ** 2).sum(0)
        total = seen + n
        delta = batch_mean - self.mean
        m2 = (self.variance * seen if seen else torch.zeros_like(batch_m2)) + batch_m2 + delta ** 2 * seen * n / total
        self.mean += delta * n / total
        self.variance.copy_(m2 / total)
        self.rows_seen.fill_(total)

    def standardise(self, hidden):
        hidden = hidden.to(device=self.mean.device, dtype=torch.float32)
        return (hidden - self.mean) / torch.sqrt(self.variance.clamp(min=1e-4))  # a constant dimension stays finite


class AnswerHeadUpdate(Standardiser):
    """``answer_head: trainable`` (ours): a trainable update of the output head's answer rows, added to the frozen
    head's answer logits at the last position: W z + b, where z is the last hidden state standardised per dimension
    (``Standardiser``, calibrated on the first ``calibration_rows`` training rows).

    The Yes - No score is a linear read-out of the last hidden state along the frozen direction w_Yes - w_No; with
    this update the direction itself learns (2 x (d + 1) parameters). Zero at the start, so the untrained model
    scores as before."""

    def __init__(self, d_model, n_answers=2, calibration_rows=4096):
        super().__init__(d_model, calibration_rows)
        self.weight = nn.Parameter(torch.zeros(n_answers, d_model))
        self.bias = nn.Parameter(torch.zeros(n_answers))

    def forward(self, final):
        if self.training and torch.is_grad_enabled():
            self.calibrate(final)
        return self.standardise(final).to(self.weight) @ self.weight.t() + self.bias


class AnswerScorer:
    """Score = the Yes logit minus the No logit at the last position (``answer_score: yes_minus_no``, the default:
    the log-odds of the two answers, free of the offset every logit of the vocabulary shares), or the Yes logit
    alone (``yes_logit``, CoRA's and CoLLM's code)."""

    def __init__(self, llm, tokenizer, config, prompt_end):
        words = config["answer_words"] or ["Yes", "No"]
        self.answer_ids = answer_token_ids(tokenizer, words, after=prompt_end)
        self.mode = config["answer_score"] or "yes_minus_no"  # its values are checked with the config (config.CHOICES)

    def __call__(self, llm, input_ids, attention_mask, inputs_embeds=None, update=None):
        logits = last_position_answer_logits(llm, input_ids, attention_mask, self.answer_ids, inputs_embeds, update)
        return logits[:, 0] if self.mode == "yes_logit" else logits[:, 0] - logits[:, 1]


def decoder_layer(llm, value, option):
    """``value`` of a layer option (``option``) as a 1-based decoder layer of ``llm``, or None (``~``: the last hidden
    state); a number outside the LLM's layers is refused by name."""
    layers = int(llm.config.num_hidden_layers)
    if value is not None and not 1 <= int(value) <= layers:
        raise ValueError(f"{option} {value}: the LLM has {layers} decoder layers; use 1 to {layers} or ~.")
    return None if value is None else int(value)


def decoder_states(llm, inputs_embeds, attention_mask, layer=None):
    """(the last hidden states, the states of decoder layer ``layer``) of one pass without KV cache; with ``layer``
    None (``~``) both are the last hidden states. The output head is never run."""
    out = llm.get_decoder()(inputs_embeds=inputs_embeds, attention_mask=attention_mask, use_cache=False,
                            output_hidden_states=layer is not None)
    return out.last_hidden_state, (out.last_hidden_state if layer is None else out.hidden_states[layer])


def hidden_at(llm, inputs_embeds, attention_mask, positions, layer=None):
    """The next-item head's read-out: the decoder's last hidden state at ``positions`` (one per row), or the output
    of decoder layer ``layer`` (1-based) of the same pass (``decoder_states``)."""
    hidden = decoder_states(llm, inputs_embeds, attention_mask, layer)[1]
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), positions.to(hidden.device)]


@functools.lru_cache(maxsize=None)
def _cache_argument(decoder_class):
    """transformers >= 5.2x names the decoder's key/value cache argument and output ``cache``, earlier versions
    ``past_key_values`` (asked once per class: greedy decoding calls the decoder once per token)."""
    return "cache" if "cache" in inspect.signature(decoder_class.forward).parameters else "past_key_values"


def _with_cache(decoder, cache, **inputs):
    """The decoder's forward, continuing from a key/value ``cache`` (None: a fresh one is made); returns (output, cache)."""
    name = _cache_argument(type(decoder))
    if cache is not None:
        inputs[name] = cache
    out = decoder(use_cache=True, **inputs)
    return out, getattr(out, name)


def _head_logprobs(head, hidden, targets):
    """log p(target) at each position of ``hidden`` (n, d) under the output head (the full vocabulary's softmax)."""
    logits = head(hidden.to(head.weight.dtype)).float()
    return torch.log_softmax(logits, dim=-1).gather(-1, targets.view(-1, 1).to(logits.device)).squeeze(-1)


def continuation_logprobs(llm, prompt_embeds, prompt_mask, continuations, pad_id=0):
    """Log-likelihood of each continuation after its row's prompt, from one pass over the prompts whose key/value
    cache every continuation of the row reuses (not one full forward per continuation).

    ``prompt_embeds`` (rows, P, d) and ``prompt_mask`` (rows, P) are right-padded; ``continuations`` holds per row
    the same number of token id lists. Returns (sums, counts), each (rows, per row): the summed log-probability of
    each continuation's tokens and its token count. Positions continue each prompt's own length, so the result is
    what a forward of prompt + continuation alone gives."""
    decoder, head, embed = llm.get_decoder(), llm.get_output_embeddings(), llm.get_input_embeddings()
    rows, count = len(continuations), len(continuations[0])
    out, cache = _with_cache(decoder, None, inputs_embeds=prompt_embeds, attention_mask=prompt_mask)
    lengths = prompt_mask.sum(dim=1)
    last = out.last_hidden_state[torch.arange(rows, device=lengths.device), lengths - 1]  # predicts each first token
    cache.batch_repeat_interleave(count)
    flat = [list(ids) for row in continuations for ids in row]
    width = max(map(len, flat))
    device = prompt_mask.device
    ids = torch.full((len(flat), width), pad_id, dtype=torch.long, device=device)
    mask = torch.zeros((len(flat), width), dtype=prompt_mask.dtype, device=device)
    for k, tokens in enumerate(flat):
        ids[k, : len(tokens)] = torch.tensor(tokens, device=device)
        mask[k, : len(tokens)] = 1
    positions = lengths.repeat_interleave(count).unsqueeze(1) + torch.arange(width, device=device).unsqueeze(0)
    attention = torch.cat([prompt_mask.repeat_interleave(count, dim=0), mask], dim=1)
    hidden = _with_cache(decoder, cache, inputs_embeds=embed(ids), attention_mask=attention,
                         position_ids=positions)[0].last_hidden_state
    before = torch.cat([last.repeat_interleave(count, dim=0).unsqueeze(1), hidden[:, :-1]], dim=1)  # predicts token j
    sums = torch.zeros(len(flat), device=device)
    for row in range(rows):  # the vocabulary's softmax one row's continuations at a time (bounded memory)
        part = slice(row * count, (row + 1) * count)
        real = mask[part].bool()
        logp = _head_logprobs(head, before[part][real], ids[part][real]).to(device)
        sums[part] = torch.zeros(real.shape, device=device).masked_scatter(real, logp).sum(dim=1)
    return sums.view(rows, count), mask.sum(dim=1).view(rows, count)


def greedy_answers(llm, prompt_embeds, prompt_mask, max_new_tokens, eos_id):
    """Greedy decoding of at most ``max_new_tokens`` after each right-padded prompt, reusing the key/value cache;
    returns per row the generated token ids (up to, not including, the end-of-sequence token)."""
    decoder, head, embed = llm.get_decoder(), llm.get_output_embeddings(), llm.get_input_embeddings()
    rows = prompt_mask.shape[0]
    device = prompt_mask.device
    out, cache = _with_cache(decoder, None, inputs_embeds=prompt_embeds, attention_mask=prompt_mask)
    lengths = prompt_mask.sum(dim=1)
    hidden = out.last_hidden_state[torch.arange(rows, device=device), lengths - 1]
    mask = prompt_mask
    done = torch.zeros(rows, dtype=torch.bool, device=device)
    answers = [[] for _ in range(rows)]
    for step in range(max_new_tokens):
        token = head(hidden.to(head.weight.dtype)).argmax(dim=-1).to(device)
        for row in range(rows):
            if not done[row] and int(token[row]) != eos_id:
                answers[row].append(int(token[row]))
        done |= token == eos_id
        if bool(done.all()) or step == max_new_tokens - 1:
            break
        mask = torch.cat([mask, torch.ones(rows, 1, dtype=mask.dtype, device=device)], dim=1)
        out, cache = _with_cache(decoder, cache, inputs_embeds=embed(token.unsqueeze(1)), attention_mask=mask,
                                 position_ids=(lengths + step).unsqueeze(1))
        hidden = out.last_hidden_state[:, -1]
    return answers


def cosines(queries, keys):
    """(rows, choices): cos(query_k, key_kj) of queries (rows, d) and keys (rows, choices, d), in float32."""
    return torch.einsum("rd,rcd->rc", F.normalize(queries.float(), dim=-1), F.normalize(keys.float(), dim=-1))


def info_nce(queries, keys, positives, temperature):
    """Cross-entropy of cos(query_k, key_kj) / temperature over j, with ``positives[k]`` the right j; ``keys`` is
    (rows, choices, d)."""
    logits = cosines(queries, keys)
    return F.cross_entropy(logits / temperature, positives.to(logits.device))


def unique_first(items):
    """The distinct values of ``items`` and the index of each one's first occurrence."""
    unique, inverse = torch.unique(items, return_inverse=True)
    first = torch.full((len(unique),), len(items), dtype=torch.long, device=items.device)
    first = first.scatter_reduce(0, inverse, torch.arange(len(items), device=items.device), reduce="amin")
    return unique, first
