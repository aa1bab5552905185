"""Per-sample low-rank weight deltas on a frozen model's linear layers (CoRA's and RecLoRA's injection).

For every target module m and every sample b of a batch the module's output gets a low-rank delta

    h_m = W_m x + (alpha / r) * (dropout(x) A_{b,m}) B_{b,m}     (A_{b,m} in R^{d_in x r}, B_{b,m} in R^{r x d_out})

which equals merging dW = (A_{b,m} B_{b,m})^T into W_m for that one sample (tests/test_dynamic_lora.py).
No weight matrix is copied per sample: the delta is two batched matmuls through rank r.

* ``DynamicLoRA`` (CoRA): A_b is set per batch and shared by every module; B_{b,m} = P_m is learned per
  module, zero-initialised. Modules that read the same input tensor (q, k and v) share one x A_b.
* ``MixtureLoRA`` (RecLoRA): every module has a bank of N meta-LoRAs (A_k, B_k), B_k zero-initialised; the
  model sets per-sample mixing weights alpha_{b,m,k} and A_{b,m} = sum_k alpha A_k, B_{b,m} = sum_k alpha B_k.

Both work through the same forward hooks (``PerSampleLoRA``), like peft keeps injection apart from models:
a model only sets the batch's weights (``with lora.weights(...): ...``) and does not know how hooks work.
"""

import contextlib
import math

import torch
from torch import nn

from recbole_cora.llm.loading import execution_device

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


class PerSampleLoRA(nn.Module):
    """The hooks: find the target modules, and while a batch's weights are set add ``delta`` to each
    target's output. A subclass says what the batch's weights are and how a module's delta is made."""

    def __init__(self, model, target_modules=DEFAULT_TARGETS, rank=16, alpha=32, dropout=0.05):
        super().__init__()
        self.targets = find_target_modules(model, target_modules)
        self.rank = rank
        self.scaling = alpha / rank
        self.dropout = nn.Dropout(dropout)
        self.module_names = list(self.targets)
        self._batch = None  # what the model set for this batch (None: the base model, untouched)
        self._handles = [m.register_forward_hook(self._hook_for(self._key(name))) for name, m in self.targets.items()]

    @staticmethod
    def _key(name):
        return name.replace(".", "__")

    @property
    def keys(self):
        return [self._key(name) for name in self.module_names]

    @contextlib.contextmanager
    def _set(self, batch):
        self._batch = batch
        try:
            yield
        finally:
            self._batch = None
            self._release()

    def _release(self):
        """Drop what was cached for the batch."""

    def factors(self, key, x):
        """(dropout(x) A, B) for module ``key`` and input x (batch, seq, d_in): xa (batch, seq, r) and
        B (r, d_out), shared by the batch, or (batch, r, d_out), one per sample."""
        raise NotImplementedError

    def add_delta(self, key, x, output):
        """output + (alpha / r) (x A) B in the output's dtype. The scaling goes on the rank-r tensor, and the
        product and the sum are one addmm/baddbmm: no (batch, seq, d_out) temporary besides the result."""
        xa, B = self.factors(key, x)
        # in the LLM's dtype: for a bf16 LLM the float32 B is cast as autocast casts weights (its gradient comes
        # back as float32), and the product and sum stay one fused op. Computing the delta in float32 and then
        # casting it made three more passes over a (batch, seq, d_out) tensor per module: on a bf16 Llama-2-7B
        # layer (benchmarks/bench_layer.py, CPU) CoRA's forward overhead was 2.4-2.5 % with them, 0.8-1.7 % now.
        B = B.to(output.dtype)
        xa = xa.to(output.dtype) * self.scaling
        if B.dim() == 2:
            flat = torch.addmm(output.reshape(-1, output.shape[-1]), xa.reshape(-1, xa.shape[-1]), B)
            return flat.view(output.shape)
        return torch.baddbmm(output.reshape(B.shape[0], -1, output.shape[-1]), xa.reshape(B.shape[0], -1, xa.shape[-1]), B).view(output.shape)

    def _hook_for(self, key):
        def hook(module, inputs, output):
            if self._batch is None:
                return output
            return self.add_delta(key, inputs[0], output)

        return hook

    def remove(self):
        """Take the hooks out (the model is then exactly the base model again)."""
        for handle in self._handles:
            handle.remove()
        self._handles = []


class DynamicLoRA(PerSampleLoRA):
    """CoRA: h_m = W_m x + (alpha / r) P_m (dropout(x) A_b), A_b per sample, P_m learned per module."""

    def __init__(self, model, target_modules=DEFAULT_TARGETS, rank=16, alpha=32, dropout=0.05):
        super().__init__(model, target_modules, rank, alpha, dropout)
        widths = {module.in_features for module in self.targets.values()}
        if len(widths) != 1:
            self.remove()
            raise ValueError(
                f"lora_target_modules {list(target_modules)} have different input widths {sorted(widths)}; one "
                "A_b is shared by all of them, so choose modules that read the hidden state (q/k/v/o_proj)."
            )
        self.in_features = widths.pop()
        self.P = nn.ParameterDict({
            self._key(name): nn.Parameter(torch.zeros(rank, m.out_features, dtype=torch.float32, device=execution_device(m)))
            for name, m in self.targets.items()
        })
        self._shared = (None, None)  # (input tensor, its x A_b), reused by modules reading the same input

    def weights(self, A):
        """Inject A (batch, d_in, r) for the duration of the block; the base model is untouched after."""
        if A.shape[1:] != (self.in_features, self.rank):
            raise ValueError(f"A has shape {tuple(A.shape)}; expected (batch, {self.in_features}, {self.rank}).")
        return self._set(A)

    def _release(self):
        self._shared = (None, None)

    def factors(self, key, x):
        if self._shared[0] is not x:
            A = self._batch.to(device=x.device, dtype=x.dtype)
            self._shared = (x, torch.matmul(self.dropout(x), A))  # (batch, seq, r)
        return self._shared[1], self.P[key]


class MixtureLoRA(PerSampleLoRA):
    """RecLoRA: a bank of N meta-LoRAs per module, mixed per sample by weights the model sets.

    A_{b,m} = sum_k alpha_{b,m,k} A_{m,k} and B_{b,m} = sum_k alpha_{b,m,k} B_{m,k} (factors are mixed,
    not their products); h_m = W_m x + (alpha / r) (dropout(x) A_{b,m}) B_{b,m}. Mixing the factors first
    costs N d_in r per sample, instead of N times the whole x A."""

    def __init__(self, model, target_modules=("q_proj", "v_proj"), rank=8, alpha=16, dropout=0.05, num_loras=16):
        super().__init__(model, target_modules, rank, alpha, dropout)
        self.num_loras = num_loras
        self.A = nn.ParameterDict()
        self.B = nn.ParameterDict()
        for name, m in self.targets.items():
            A = torch.empty(num_loras, m.in_features, rank, dtype=torch.float32, device=execution_device(m))
            bound = 1.0 / math.sqrt(m.in_features)  # peft's kaiming_uniform(a=sqrt(5)) bound for A
            self.A[self._key(name)] = nn.Parameter(A.uniform_(-bound, bound))
            self.B[self._key(name)] = nn.Parameter(
                torch.zeros(num_loras, rank, m.out_features, dtype=torch.float32, device=execution_device(m))
            )

    def weights(self, mixture):
        """Mix the banks with ``mixture`` (batch, modules, N) — module order ``self.keys`` — for the block."""
        expected = (len(self.module_names), self.num_loras)
        if mixture.dim() != 3 or tuple(mixture.shape[1:]) != expected:
            raise ValueError(f"mixture has shape {tuple(mixture.shape)}; expected (batch, {expected[0]}, {expected[1]}).")
        return self._set(dict(zip(self.keys, mixture.unbind(dim=1))))

    def mixed(self, key, mixture):
        """A_{b,m} (batch, d_in, r) and B_{b,m} (batch, r, d_out) of module ``key`` for mixing weights (batch, N)."""
        A = torch.einsum("bn,nir->bir", mixture.to(self.A[key].dtype), self.A[key])
        B = torch.einsum("bn,nro->bro", mixture.to(self.B[key].dtype), self.B[key])
        return A, B

    def factors(self, key, x):
        A, B = self.mixed(key, self._batch[key].to(x.device))
        return torch.matmul(self.dropout(x), A.to(x.dtype)), B  # (batch, seq, r), (batch, r, d_out)
