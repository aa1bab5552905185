"""Text prompts (TALLRec style, no ID tokens) built from a dataset's histories and item text (both tasks).

Each distinct prompt is tokenized once and cached (as a whole string, so the token ids are exactly
what the tokenizer gives for the full text): in memory for the run, and on disk in ``token_cache_dir``
(one safetensors file per dataset, keyed by the tokenizer, the template and every item's text), so a
second run, a resumed run or another model with the same prompts tokenizes nothing. A prompt longer
than ``max_prompt_tokens`` drops its oldest history titles first; the target item and the question are
never cut.
"""

import hashlib
import json
import string
from logging import getLogger
from pathlib import Path

import torch

from recbole_cora.io import atomic_path, build_lock


def template_slots(template):
    """The slot names of a ``str.format`` template, in order (a ValueError for a malformed one)."""
    return [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]


def template_problems(option, template, required=("target",), optional=("history",), once=()):
    """Sentences naming what is wrong with the prompt template of ``option`` (empty: nothing): a slot it must hold
    and lacks (``once``: exactly one time), a slot no model fills, or text ``str.format`` cannot read. Checked by the
    model that fills it and, before anything trains, by ``recbole_cora.checks``."""
    if not template or not isinstance(template, str):
        return [f"{option} is empty: it must contain the slot {{{required[0]}}}."]
    try:
        names = template_slots(template)
    except ValueError as err:
        return [f"{option} {template!r} cannot be read as a template ({err}): write slots as {{history}}, "
                "and a literal brace as {{ or }}."]
    known = [*optional, *required, *once]
    problems = [f"{option} must contain the slot {{{slot}}}; got {template!r}." for slot in required if slot not in names]
    unknown = [name for name in dict.fromkeys(names) if name not in known]
    if unknown:
        slots = ", ".join("{" + name + "}" for name in known)
        problems.append(f"{option} has an unknown slot {', '.join(repr(n) for n in unknown)}: only {slots} exist.")
    problems += [f"{option} must contain the slot {{{slot}}} exactly once." for slot in once if names.count(slot) != 1]
    return problems


class PromptBuilder:
    """``slots`` names extra template slots (e.g. CoLLM's ``user_emb``, ``item_emb``) that are filled
    with one placeholder token each, whose input embedding a model replaces."""

    def __init__(self, config, dataset, tokenizer, option="prompt_template", slots=(), context_length=None,
                 with_target=True, shown=None):
        self.option, self.template = option, config[option]
        self.slots = tuple(slots)
        # show only the last ``shown`` history items; by default the dataset's ``history_len``: a labeled row carries
        # that many, a sequential one (the candidate task) RecBole's whole ID history of MAX_ITEM_LIST_LENGTH, of
        # which every prompt of a model shows the same last ``history_len`` (CoLLM's second prompt showed all 20)
        self.shown = shown if shown is not None else (getattr(dataset, "history_len", 0) or None)
        required = ("target",) if with_target else ("history",)
        optional = ("history",) if with_target else ()
        problems = template_problems(option, self.template, required, optional, once=self.slots)
        if problems:
            raise ValueError(problems[0])
        self.placeholder = config["placeholder_token"] or tokenizer.unk_token or tokenizer.pad_token
        placeholder_ids = tokenizer.encode(self.placeholder, add_special_tokens=False) if self.slots else [None]
        if len(placeholder_ids) != 1:
            raise ValueError(f"placeholder_token {self.placeholder!r} is not one token for this tokenizer: name a special token.")
        self.placeholder_id = placeholder_ids[0]
        # slot order in the text, so that the k-th placeholder of a row belongs to the k-th slot
        self.slot_order = sorted(self.slots, key=lambda slot: self.template.index("{" + slot + "}"))
        self.item_format = config["prompt_item_format"] or '"{title}"'
        self.separator = config["prompt_history_separator"] if config["prompt_history_separator"] is not None else ", "
        self.empty_history = config["prompt_empty_history"] or "none"
        self.max_tokens = int(config["max_prompt_tokens"] or 1024)
        self.logger = getLogger()
        if context_length and context_length < self.max_tokens:  # the LLM could not read longer prompts
            self.logger.info(
                f"max_prompt_tokens={self.max_tokens} is over the LLM's context of {context_length} tokens: "
                f"prompts are cut to {context_length}"
            )
            self.max_tokens = int(context_length)
        self.tokenizer = tokenizer
        self.iid_field = dataset.iid_field
        self.history_field = dataset.history_field
        self.titles = [""] + [self.item_format.format(title=dataset.item_title(i)) for i in range(1, dataset.item_num)]
        self.pad_id = tokenizer.pad_token_id
        self._cache = {}
        self.truncated = 0
        self.cache_file = None
        if config["token_cache_dir"]:
            key = self._cache_key(option)
            self.cache_file = Path(config["token_cache_dir"]) / f"{dataset.dataset_name}-{key}.safetensors"
            self._load_cache()
        self._saved = len(self._cache)

    # ------------------------------------------------------------------ the token cache on disk
    def _cache_key(self, option):
        tokenizer = self.tokenizer
        backend = getattr(tokenizer, "backend_tokenizer", None)
        vocabulary = backend.to_str() if backend is not None else json.dumps(sorted(tokenizer.get_vocab().items()))
        blob = json.dumps([
            option, self.template, self.slots, self.placeholder, self.item_format, self.separator, self.empty_history,
            self.max_tokens, type(tokenizer).__name__, hashlib.sha256(vocabulary.encode()).hexdigest(), self.titles,
        ])
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def _load_cache(self):
        entries = self._read_cache_file()
        self._cache.update(entries)
        if entries:
            self.logger.info(f"token cache: {len(entries):,} prompts from {self.cache_file}")

    def _read_cache_file(self):
        """The prompts of the cache file ({key: token ids}; empty when there is none or it cannot be read)."""
        if not self.cache_file.is_file():
            return {}
        from safetensors.torch import load_file

        try:
            tensors = load_file(str(self.cache_file))
        except Exception as err:  # a broken cache costs only time: tokenize again
            self.logger.warning(f"token cache '{self.cache_file}' could not be read ({err}); tokenizing again")
            return {}
        keys, offsets, ids = tensors["keys"].tolist(), tensors["offsets"].tolist(), tensors["ids"].tolist()
        return {tuple(i for i in key if i >= 0): ids[offsets[k]: offsets[k + 1]] for k, key in enumerate(keys)}

    def save_cache(self):
        """Write the prompts tokenized so far (if there are new ones) to the cache file, atomically."""
        if self.cache_file is None or len(self._cache) == self._saved:
            return
        from safetensors.torch import save_file

        with build_lock(self.cache_file, "the token cache"):  # runs sharing the cache add to it; none loses the other's
            for key, ids in self._read_cache_file().items():
                self._cache.setdefault(key, ids)
            self._write_cache(save_file)

    def _write_cache(self, save_file):
        items = list(self._cache.items())
        width = max(len(key) for key, _ in items)
        keys = torch.full((len(items), width), -1, dtype=torch.int32)
        lengths = torch.tensor([len(ids) for _, ids in items], dtype=torch.int64)
        for k, (key, _) in enumerate(items):
            keys[k, : len(key)] = torch.tensor(key, dtype=torch.int32)
        offsets = torch.zeros(len(items) + 1, dtype=torch.int64)
        offsets[1:] = torch.cumsum(lengths, 0)
        ids = torch.tensor([i for _, row in items for i in row], dtype=torch.int32)
        with atomic_path(self.cache_file) as tmp:
            save_file({"keys": keys, "offsets": offsets, "ids": ids}, str(tmp))
        self._saved = len(items)

    def lengths(self, histories, targets):
        """Token counts of the rows' prompts (tokenizing the ones not cached yet)."""
        return [len(ids) for ids in self.token_ids(histories, targets)]

    @property
    def prompt_end(self):
        """The text the answer follows (for finding the answer tokens)."""
        return self.template.rstrip("\n").split("{target}")[-1] or self.template

    def _history(self, history):
        """The history items a prompt shows: the real ones (0 = padding), the last ``shown`` of them."""
        history = [i for i in history if i > 0]
        return history[-self.shown:] if self.shown else history

    def text(self, history, target=0):
        """The prompt of one row: ``history`` are item ids, oldest first (0 = padding); ``target`` 0: none."""
        titles = [self.titles[i] for i in self._history(history)]
        shown = self.separator.join(titles) if titles else self.empty_history
        fill = {slot: self.placeholder for slot in self.slots}
        return self.template.format(history=shown, target=self.titles[target], **fill)

    def _encode(self, history, target):
        return self._encode_text(history, target)[1]

    def _encode_text(self, history, target):
        """(the text the tokenizer is given, its token ids): the oldest history titles dropped while the prompt is
        over ``max_tokens``."""
        history = self._history(history)
        dropped = False
        while True:
            text = self.text(history, target)
            ids = self.tokenizer.encode(text)
            if len(ids) <= self.max_tokens:
                self.truncated += dropped
                return text, ids
            if not history:
                raise ValueError(
                    f"the prompt for item {target} has {len(ids)} tokens without any history, over "
                    f"max_prompt_tokens={self.max_tokens} (or the LLM's context): raise max_prompt_tokens, shorten "
                    "prompt_template or the item text, or use an LLM with a longer context."
                )
            history, dropped = history[1:], True  # the oldest title goes first

    def token_ids(self, histories, targets):
        """Token id lists for rows given as (history id lists, target ids); cached per distinct prompt."""
        out = []
        for history, target in zip(histories, targets):
            key = (target, *self._history(history))
            ids = self._cache.get(key)
            if ids is None:
                before = self.truncated
                ids = self._cache[key] = self._encode(list(history), target)
                if self.truncated > before and self.truncated in (1, 10, 100, 1000, 10000):
                    self.logger.warning(
                        f"{self.truncated} prompt(s) so far were over max_prompt_tokens={self.max_tokens}; "
                        "their oldest history titles were dropped"
                    )
            out.append(ids)
        return out

    def example(self, interaction, with_target=True):
        """(text, token ids) of the first row of ``interaction`` exactly as the LLM reads it: the string given to the
        tokenizer (after any history titles dropped for length) and what it gave (the ids every batch uses)."""
        histories, targets = self.rows(interaction[:1], with_target)
        ids = self.token_ids(histories, targets)[0]
        truncated = self.truncated  # counted once, by token_ids
        text, _ = self._encode_text(list(histories[0]), targets[0])
        self.truncated = truncated
        return text, ids

    def rows(self, interaction, with_target=True):
        """(histories, targets) of a batch's rows (targets 0 when the prompt shows none)."""
        histories = interaction[self.history_field].tolist() if self.history_field in interaction else [[]] * len(interaction)
        targets = interaction[self.iid_field].tolist() if with_target else [0] * len(histories)
        return histories, targets

    def batch(self, interaction, device=None, with_target=True):
        """(input_ids, attention_mask) of a batch, right-padded (the last real token ends each row)."""
        rows = self.token_ids(*self.rows(interaction, with_target))
        return self.pad(rows, device)

    def pad(self, rows, device=None):
        """Token id lists as (input_ids, attention_mask), right-padded."""
        width = max(map(len, rows))
        input_ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
        for k, ids in enumerate(rows):
            input_ids[k, : len(ids)] = torch.tensor(ids, dtype=torch.long)
            attention_mask[k, : len(ids)] = 1
        return input_ids.to(device), attention_mask.to(device)
