"""Prompts that show a user's history and a list of candidate items, each item as its title and, in the text-ID form,
one placeholder token right after it (RSLLM's text-ID prompt; LLaRA's shape). The answer is one candidate's title.

Token ids are assembled from pieces tokenized once each (the template's text, each item's title, the separator), so
the position of every placeholder and of every candidate's title is known exactly, without searching the ids. The
pieces join as the text reads: ``... watched "A", "B". Candidates: "C", "D" ...`` (an item follows its slot's text
after one space). A prompt over ``max_prompt_tokens`` drops its oldest history items first; candidates never.
"""

from dataclasses import dataclass, field

from recbole_cora.data.prompts import template_problems, template_slots

SLOTS = ("history", "candidates")


@dataclass
class ListPrompt:
    """One row's prompt: ``ids``; ``items`` (position, item id) of every placeholder (text-ID form only);
    ``spans`` (start, end) of each candidate's title tokens, in list order; ``user_at`` the position of the user's
    placeholder at the prompt's end (``user_token``), or None."""
    ids: list
    items: list = field(default_factory=list)
    spans: list = field(default_factory=list)
    user_at: int = None


class ListPromptBuilder:
    def __init__(self, config, dataset, tokenizer, option="rsllm_prompt_template", context_length=None):
        self.option, self.template = option, config[option]
        problems = template_problems(option, self.template, required=SLOTS, optional=())
        if problems:
            raise ValueError(problems[0])
        if template_slots(self.template).index("candidates") < template_slots(self.template).index("history"):
            raise ValueError(f"{option}: the {{history}} slot must come before {{candidates}}.")
        self.tokenizer = tokenizer
        self.placeholder = config["placeholder_token"] or tokenizer.unk_token or tokenizer.pad_token
        ids = tokenizer.encode(self.placeholder, add_special_tokens=False)
        if len(ids) != 1:
            raise ValueError(f"placeholder_token {self.placeholder!r} is not one token for this tokenizer: name a special token.")
        self.placeholder_id = ids[0]
        self.eos_id = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.pad_token_id
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos_id
        self.max_tokens = min(int(config["max_prompt_tokens"] or 1024), int(context_length or 10**9))
        self.item_format = config["prompt_item_format"] or '"{title}"'
        separator = config["prompt_history_separator"] if config["prompt_history_separator"] is not None else ", "
        self.separator = separator.rstrip()
        self.empty_history = config["prompt_empty_history"] or "none"
        before, rest = self.template.split("{history}", 1)
        between, after = rest.split("{candidates}", 1)
        self.pieces = [self._encode(text) for text in (before.rstrip(), between.rstrip(), after)]
        self.piece_text = [before.rstrip(), between.rstrip(), after]
        self.separator_ids = self._encode(self.separator)
        self.raw_titles = [""] + [dataset.item_title(i) for i in range(1, dataset.item_num)]
        self.shown = [""] + [" " + self.item_format.format(title=t) for t in self.raw_titles[1:]]
        self._title_ids = {}
        self._answer_ids = {}
        self.empty_ids = self._encode(" " + self.empty_history)
        self.history_len = dataset.history_len

    def _encode(self, text):
        return self.tokenizer.encode(text, add_special_tokens=False) if text else []

    def title_ids(self, item):
        """The tokens of one item as the prompt shows it (a leading space, then ``prompt_item_format``)."""
        ids = self._title_ids.get(item)
        if ids is None:
            ids = self._title_ids[item] = self._encode(self.shown[item])
        return ids

    def answer_ids(self, item):
        """The answer naming ``item``: the very tokens the prompt shows it as (``title_ids``: one space, then
        ``prompt_item_format``, quotes and all), then the end-of-sequence token. An answer in another form (the bare
        title after a quoted list) makes its first and last tokens cost far more than the copied middle ones, so a
        per-token mean would rank candidates by the length of their titles."""
        ids = self._answer_ids.get(item)
        if ids is None:
            ids = self._answer_ids[item] = list(self.title_ids(item)) + [self.eos_id]
        return ids

    def _shown(self, history):
        """The history items a prompt shows: the real ones (0: padding), the last ``history_len`` (0: all)."""
        return [i for i in history if i > 0][-self.history_len:]

    def _list(self, items, with_ids, start, out, spans=None):
        ids = []
        for k, item in enumerate(items):
            if k:
                ids += self.separator_ids
            title = self.title_ids(item)
            if spans is not None:
                spans.append((start + len(ids), start + len(ids) + len(title)))
            ids += title
            if with_ids:
                out.append((start + len(ids), item))
                ids.append(self.placeholder_id)
        return ids

    def build(self, history, candidates, with_ids, user_token=False):
        """The prompt of one row: ``history`` item ids oldest first (0: padding; the last ``history_len`` are shown),
        ``candidates`` in list order; ``with_ids`` puts a placeholder after every item (the text-ID form);
        ``user_token`` one more at the prompt's end, for the user's state."""
        history = self._shown(history)
        while True:
            items, spans = [], []
            ids = list(self.pieces[0])
            ids += self._list(history, with_ids, len(ids), items) if history else self.empty_ids
            ids += self.pieces[1]
            ids += self._list(candidates, with_ids, len(ids), items, spans)
            ids += self.pieces[2]
            user_at = None
            if user_token:
                user_at = len(ids)
                ids.append(self.placeholder_id)
            if len(ids) <= self.max_tokens:
                return ListPrompt(ids, items, spans, user_at)
            if not history:
                raise ValueError(
                    f"a prompt of {len(candidates)} candidates has {len(ids)} tokens without any history, over "
                    f"max_prompt_tokens={self.max_tokens} (or the LLM's context): raise max_prompt_tokens, lower "
                    "candidate_count, or shorten the template or the item text."
                )
            history = history[1:]

    def text(self, history, candidates, with_ids, user_token=False):
        """The prompt as text (what its pieces read as together), for the plan's example."""
        history = self._shown(history)
        mark = self.placeholder if with_ids else ""  # the placeholder token follows the title's last token

        def listed(items):
            return self.separator.join(f"{self.shown[i]}{mark}" for i in items)

        shown = listed(history) if history else " " + self.empty_history
        end = self.placeholder if user_token else ""
        return f"{self.piece_text[0]}{shown}{self.piece_text[1]}{listed(candidates)}{self.piece_text[2]}{end}"
