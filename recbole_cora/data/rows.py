"""Which rows of a split are used: the fixed evaluation rows every model of a comparison is scored on, and a
model's fixed training subset. Both are drawn once with the run's seed."""

import torch


def eval_row_subset(n, config):
    """The evaluation rows (indices into a valid/test split): all, or ``eval_rows`` of them drawn once
    with the run's seed. Every model of a comparison is scored on the same rows."""
    sample = config["eval_rows"]
    if sample and sample < n:
        generator = torch.Generator().manual_seed(int(config["seed"]))
        return sorted(torch.randperm(n, generator=generator)[: int(sample)].tolist())
    return list(range(n))


def fixed_row_subset(n_rows, samples, seed):
    """The training rows an LLM side learns from, drawn once, uniformly, with the seed (``llm_train_samples``: a
    count, or a share below 1; ~ or a count of at least ``n_rows``: every row, then None). RecLoRA's Few2Many and
    TALLRec's few-shot ``sample``."""
    if not samples:
        return None
    count = int(round(samples * n_rows)) if samples < 1 else int(samples)
    if count >= n_rows:
        return None
    generator = torch.Generator().manual_seed(int(seed))
    return sorted(torch.randperm(n_rows, generator=generator)[:count].tolist())
