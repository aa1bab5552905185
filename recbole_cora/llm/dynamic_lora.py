"""Per-sample low-rank weight deltas on a frozen model's linear layers (CoRA's injection).

For every target module m and every sample b of a batch:

    h_m = W_m x + (alpha / r) * P_m (dropout(x) A_b)          (x A_b: batch-matmul, A_b in R^{d_in x r})

which equals merging dW_b = (A_b P_m)^T into W_m for that one sample (tests/test_dynamic_lora.py).
A_b is set per batch by the model; P_m is learned per module, zero-initialised (so the injected model
starts exactly as the base model). No weight matrix is copied per sample: the delta is two batched
matmuls through rank r. Modules that read the same input tensor (q, k and v) share one x A_b.

It works through forward hooks, like peft keeps injection apart from models: a model that uses it only
sets the batch's A (``with lora.weights(A): ...``) and does not know how the hooks are installed.
"""

import contextlib

import torch
from torch import nn

DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")  # Llama, Qwen2, Mistral, SmolLM2


def find_target_modules(model, target_names):
    """``{qualified name: nn.Linear}`` of the linear layers whose last name part is in ``target_names``."""
    found = {
        name: module for name, module in model.named_modules()
        if isinstance(module, nn.Linear) and name.rsplit(".", 1)[-1] in set(target_names)
    }
    if not found:
        linear = sorted({name.rsplit(".", 1)[-1] for name, m in model.named_modules() if isinstance(m, nn.Linear)})
        raise ValueError(
            f"lora_target_modules {list(target_names)} match no linear layer of {type(model).__name__}; "
            f"its linear layers are named {linear}."
        )
    return found


class DynamicLoRA(nn.Module):
    def __init__(self, model, target_modules=DEFAULT_TARGETS, rank=16, alpha=32, dropout=0.05):
        super().__init__()
        targets = find_target_modules(model, target_modules)
        widths = {module.in_features for module in targets.values()}
        if len(widths) != 1:
            raise ValueError(
                f"lora_target_modules {list(target_modules)} have different input widths {sorted(widths)}; one "
                "A_b is shared by all of them, so choose modules that read the hidden state (q/k/v/o_proj)."
            )
        self.in_features = widths.pop()
        self.rank = rank
        self.scaling = alpha / rank
        self.dropout = nn.Dropout(dropout)
        self.module_names = list(targets)
        self.P = nn.ParameterDict({
            self._key(name): nn.Parameter(torch.zeros(rank, m.out_features, dtype=torch.float32, device=m.weight.device))
            for name, m in targets.items()
        })
        self._A = None
        self._shared = (None, None)  # (input tensor, its x A_b), reused by modules reading the same input
        self._handles = [m.register_forward_hook(self._hook_for(self._key(name))) for name, m in targets.items()]

    @staticmethod
    def _key(name):
        return name.replace(".", "__")

    @contextlib.contextmanager
    def weights(self, A):
        """Inject A (batch, d_in, r) for the duration of the block; the base model is untouched after."""
        if A.shape[1:] != (self.in_features, self.rank):
            raise ValueError(f"A has shape {tuple(A.shape)}; expected (batch, {self.in_features}, {self.rank}).")
        self._A = A
        try:
            yield
        finally:
            self._A = None
            self._shared = (None, None)

    def _hook_for(self, key):
        def hook(module, inputs, output):
            if self._A is None:
                return output
            x = inputs[0]
            if self._shared[0] is not x:
                A = self._A.to(device=x.device, dtype=x.dtype)
                self._shared = (x, torch.matmul(self.dropout(x), A))  # (batch, seq, r)
            xa = self._shared[1]
            P = self.P[key]
            delta = torch.matmul(xa.to(P.dtype), P) * self.scaling
            return output + delta.to(output.dtype)

        return hook

    def remove(self):
        """Take the hooks out (the model is then exactly the base model again)."""
        for handle in self._handles:
            handle.remove()
        self._handles = []
