"""What an LLM trainer feeds its model and at which rate: the rows of an epoch, their order and batches, the loader
over row indices, and the learning-rate schedule. Plain functions of the config and the data: nothing here knows
the trainer."""

import functools
import math

import torch
from transformers.trainer_pt_utils import get_length_grouped_indices


def epoch_rows(config, subset, n_rows, epoch):
    """The training rows of epoch ``epoch``: the model's fixed subset (``subset``: RecLoRA's Few2Many, TALLRec's
    few-shot sample) or all ``n_rows`` rows, of which ``train_rows_per_epoch`` are drawn anew each epoch."""
    rows = list(subset) if subset is not None else list(range(n_rows))
    sample = config["train_rows_per_epoch"]
    if sample and sample < len(rows):
        generator = torch.Generator().manual_seed(int(config["seed"]) * 1000 + epoch)
        return [rows[i] for i in torch.randperm(len(rows), generator=generator)[: int(sample)].tolist()]
    return rows


def prompt_lengths(model, data, rows):
    """Token counts of the prompts of ``rows`` of ``data`` (tokenized once, then cached), or None for a model
    without prompts."""
    if not rows:
        return None
    return model.prompt_lengths(data._dataset.inter_feat[torch.as_tensor(rows)])


def length_bucketed(rows, lengths, batch_size, seed, epoch):
    """``rows`` reordered so that each batch holds prompts of similar length (less padding): transformers'
    ``get_length_grouped_indices`` (the rows shuffled, then sorted by length, longest first, within chunks of 50
    batches), cut into batches; an incomplete batch is dropped (as drop_last) and the batches' order is shuffled, so
    that an epoch does not step from long prompts to short ones within each chunk."""
    generator = torch.Generator().manual_seed(int(seed) * 7919 + epoch)
    order = get_length_grouped_indices(lengths, batch_size, mega_batch_mult=50, generator=generator)
    chunk = 50 * batch_size  # batches are cut within each chunk, as it was sorted
    batches = [order[start: start + chunk][b: b + batch_size]
               for start in range(0, len(order), chunk) for b in range(0, min(chunk, len(order) - start), batch_size)]
    batches = [batch for batch in batches if len(batch) == batch_size]  # as drop_last
    shuffled = [batches[k] for k in torch.randperm(len(batches), generator=generator).tolist()]
    return [rows[k] for batch in shuffled for k in batch]


def longest_first(model, data, rows, config):
    """``rows`` with the longest prompts first (``length_bucketing``: batches of like lengths, less padding; no
    effect on results, which are gathered in row order); unchanged for a model without prompts."""
    if config["length_bucketing"] in ("eval", "train_and_eval"):
        lengths = prompt_lengths(model, data, rows)
        if lengths is not None:
            return [row for _, row in sorted(zip(lengths, rows), key=lambda pair: -pair[0])]
    return rows


def row_loader(data, rows, batch_size, shuffle, seed, epoch=0):
    """A plain DataLoader over row indices whose collate_fn is RecBole's (``accelerator.prepare`` cannot take
    RecBole's loaders: it remaps their ``.dataset``)."""
    from torch.utils.data import DataLoader, RandomSampler

    generator = torch.Generator().manual_seed(int(seed) + epoch)
    sampler = RandomSampler(rows, generator=generator) if shuffle else None
    # The loader's own generator: starting an iterator then draws its seed from it, not from the global RNG
    # (which dropout uses), so a resumed run's RNG stream is the uninterrupted run's.
    return DataLoader(
        rows, batch_size=batch_size, sampler=sampler, drop_last=shuffle and len(rows) >= batch_size,
        collate_fn=lambda idx: first(data.collate_fn(idx)),
        generator=torch.Generator().manual_seed(int(seed) + epoch),
    )


def first(batch):
    """RecBole's eval loaders return (interaction, row_idx, positive_u, positive_i); train loaders the interaction."""
    return batch[0] if isinstance(batch, tuple) else batch


def warmup_cosine(step, warmup, total, start, floor):
    """The learning-rate factor of optimizer step ``step`` (0-based): linear from ``start`` to 1 over ``warmup``
    steps, then half a cosine from 1 down to ``floor`` at ``total``."""
    if step < warmup:
        return start + (1.0 - start) * step / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(optimizer, config, learning_rate, total_steps):
    """Linear warm-up from ``warmup_start_lr`` to ``learning_rate`` over ``warmup_ratio`` of the planned steps,
    then cosine decay to ``min_learning_rate`` (CoRA's code: 200 steps from 1e-5, cosine to 8e-5). The first
    step trains at ``warmup_start_lr``: transformers' cosine schedule starts the warm-up at 0, which on the
    embedded default's 32 steps spent step 1 on nothing (and left the query generator without a gradient at
    step 2 too, P being still 0; benchmarks/QUALITY.md).

    torch's ``LambdaLR`` over the closed form (``warmup_cosine``) rather than ``SequentialLR(LinearLR,
    CosineAnnealingLR)``: within the planned steps the two agree to 1e-15 (relative), but ``LinearLR`` refuses a
    warm-up from 0 (``warmup_start_lr: 0``) and ``CosineAnnealingLR`` climbs back up past its last step (on 40 steps
    of a 32-step plan, 2.5 times the floor at the end) where this schedule stays at the floor."""
    total = max(1, total_steps)
    warmup = int(round(float(config["warmup_ratio"] or 0.0) * total))
    peak = float(learning_rate)
    start = min(1.0, float(config["warmup_start_lr"] or 0.0) / peak) if peak > 0 else 1.0
    floor = min(1.0, float(config["min_learning_rate"] or 0.0) / peak) if peak > 0 else 0.0
    return torch.optim.lr_scheduler.LambdaLR(optimizer, functools.partial(
        warmup_cosine, warmup=warmup, total=total, start=start, floor=floor))
