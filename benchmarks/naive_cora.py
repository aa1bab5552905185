"""A deliberately naive CoRA forward, the way a first research implementation would write it, as the
reference that ``bench_cora.py`` measures ours against.

It shares everything learned and frozen with a built ``CoRA`` model (the LLM, the CF encoder, the query
generator, P_m, alpha/r, the dropout rate, the answer token) and computes the same score, but:

* prompts are tokenized per batch from their text and padded to ONE fixed length, the longest prompt of
  the whole benchmark batch set (left padding, so the answer position is the last column);
* every target module computes its own dropout(x) A_b in its hook (q, k and v each redo it);
* the score comes from ``llm(input_ids, attention_mask).logits``: the full-vocabulary head at every
  position, of which only the last position's "Yes" (and "No") column is then read.

The ``CoRA`` model itself is not touched: this class registers its own hooks on the same linear layers,
active only inside ``scores``.
"""

import torch
from torch import nn


class NaiveCoRA(nn.Module):
    def __init__(self, model, pad_to):
        super().__init__()
        self.model = model  # the CoRA model whose parts are shared (not a copy)
        self.pad_to = int(pad_to)
        self.tokenizer = model.tokenizer
        self.answer_ids = list(model.scorer.answer_ids)
        self.mode = model.scorer.mode
        self.scaling = model.lora.scaling
        self.dropout = nn.Dropout(model.lora.dropout.p)
        self._A = None
        self._handles = [
            module.register_forward_hook(self._hook(model.lora._key(name)))
            for name, module in model.lora.targets.items()
        ]

    def _hook(self, key):
        def hook(module, inputs, output):
            if self._A is None:
                return output
            x = inputs[0]
            xa = torch.matmul(self.dropout(x), self._A.to(x.dtype))  # this module's own x A_b (B, L, r)
            delta = torch.matmul(xa, self.model.lora.P[key].to(x.dtype))  # (B, L, d_out)
            return output + self.scaling * delta.to(output.dtype)

        return hook

    def remove(self):
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def texts(self, interaction):
        prompts = self.model.prompts
        histories = interaction[prompts.history_field].tolist()
        targets = interaction[prompts.iid_field].tolist()
        return [prompts.text(h, t) for h, t in zip(histories, targets)]

    def tokenize(self, interaction, device):
        """Tokenize the batch's prompt texts now, left-padded to the fixed benchmark-wide length."""
        encoded = self.tokenizer(
            self.texts(interaction), padding="max_length", max_length=self.pad_to, padding_side="left",
            return_tensors="pt",
        )
        if encoded["input_ids"].shape[1] != self.pad_to:
            raise ValueError(f"a prompt is longer than pad_to={self.pad_to}")
        return encoded["input_ids"].to(device), encoded["attention_mask"].to(device)

    def forward(self, interaction, return_loss=False):
        model = self.model
        device = model.llm.get_input_embeddings().weight.device
        input_ids, attention_mask = self.tokenize(interaction, device)
        self._A = model.lora_factors(interaction)  # the same CF encoder and query generator
        try:
            logits = model.llm(input_ids=input_ids, attention_mask=attention_mask).logits  # (B, L, V)
        finally:
            self._A = None
        last = logits[:, -1, :].float()
        scores = last[:, self.answer_ids[0]]
        if self.mode == "yes_minus_no":
            scores = scores - last[:, self.answer_ids[1]]
        if return_loss:
            return nn.functional.binary_cross_entropy_with_logits(
                scores, interaction[model.LABEL].to(scores.device).float()
            )
        return scores
