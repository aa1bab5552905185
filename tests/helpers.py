"""Small RecBole atomic datasets written by the tests themselves."""

from pathlib import Path


def write_atomic(folder, name, inter_rows, item_rows=None, inter_header=None, item_header=None):
    """Write ``<folder>/<name>/<name>.inter`` (and ``.item``); returns the data_path to use."""
    data = Path(folder) / name
    data.mkdir(parents=True, exist_ok=True)
    inter_header = inter_header or ["user_id:token", "item_id:token", "rating:float", "timestamp:float"]
    lines = ["\t".join(inter_header)] + ["\t".join(map(str, row)) for row in inter_rows]
    (data / f"{name}.inter").write_text("\n".join(lines) + "\n")
    if item_rows is not None:
        item_header = item_header or ["item_id:token", "movie_title:token_seq", "release_year:token"]
        lines = ["\t".join(item_header)] + ["\t".join(map(str, row)) for row in item_rows]
        (data / f"{name}.item").write_text("\n".join(lines) + "\n")
    return str(Path(folder))


def offload_options(llm_path, offload_dir):
    """device_map options that cap the CPU below the LLM's size, so that accelerate keeps some layers on disk."""
    import torch
    from transformers import AutoModelForCausalLM

    full = AutoModelForCausalLM.from_pretrained(llm_path, dtype=torch.float32)
    cap = int(0.85 * sum(p.numel() * p.element_size() for p in full.parameters()))
    return {"device_map": "auto", "llm_max_memory": {"cpu": cap}, "llm_offload_dir": str(offload_dir)}


def assert_same_scores_and_gradients(model, reference, batch):
    """``model`` and ``reference`` (the same weights, placed differently) agree on scores and gradients."""
    import torch

    model.eval(), reference.eval()
    with torch.inference_mode():
        assert torch.allclose(model(batch), reference(batch), atol=1e-5)
    model.train(), reference.train()
    for m in (model, reference):
        torch.manual_seed(3)  # the same dropout masks
        m.calculate_loss(batch).backward()
    ours = {n: p for n, p in model.named_parameters() if p.requires_grad}
    theirs = {n: p for n, p in reference.named_parameters() if p.requires_grad}
    assert ours.keys() == theirs.keys()
    for name, p in ours.items():
        assert p.device.type != "meta" and p.grad is not None, name
        assert torch.allclose(p.grad, theirs[name].grad, atol=1e-5), name


def ml100k_slice(folder, name="ml100k-slice", max_user=120):
    """RecBole's ml-100k atomic files cut to the users with id <= ``max_user`` (all their ratings), with its
    whole .item file: a small real dataset for the next-item task. Returns the data_path to use."""
    import recbole

    source = Path(recbole.__file__).parent / "dataset_example" / "ml-100k"
    data = Path(folder) / name
    data.mkdir(parents=True, exist_ok=True)
    lines = (source / "ml-100k.inter").read_text().splitlines()
    kept = [lines[0]] + [line for line in lines[1:] if int(line.split("\t")[0]) <= max_user]
    (data / f"{name}.inter").write_text("\n".join(kept) + "\n")
    (data / f"{name}.item").write_text((source / "ml-100k.item").read_text())
    return str(Path(folder))


# The options a next-item test needs on that slice (no dataset config names it).
SLICE_OPTIONS = {
    "load_col": {"inter": ["user_id", "item_id", "rating", "timestamp"], "item": ["item_id", "movie_title", "release_year"]},
    "text_fields": ["movie_title", "release_year"], "item_text_template": "{movie_title} ({release_year})",
    "MAX_ITEM_LIST_LENGTH": 20,
}


def answer_scores(model, ids, mask, llm=None):
    """The score ``model``'s scorer gives (``answer_score``: the Yes logit, or Yes minus No), computed directly from
    the answer logits of ``llm`` (default: the model's own frozen LLM) at the last position."""
    from recbole_cora.llm.scoring import last_position_answer_logits

    logits = last_position_answer_logits(llm or model.llm, ids, mask, model.scorer.answer_ids)
    return logits[:, 0] if model.scorer.mode == "yes_logit" else logits[:, 0] - logits[:, 1]


class Hostile:
    """Unpickled, it creates the file ``marker`` (``__reduce__`` calls ``open(marker, "w")``)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


class HostileRecBole:
    """Unpickled, it creates the folder ``marker`` through a function of RecBole's own (``recbole.utils.ensure_dir``):
    a pickle that names only RecBole, as a checkpoint does, must still run nothing."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        from recbole.utils import ensure_dir

        return (ensure_dir, (self.marker,))


def write_hostile_checkpoint(path, marker, kind="open", protocol=2):
    """A RecBole-shaped checkpoint (``config``, ``state_dict``, ``run``) whose config is a hostile pickle."""
    import pickle

    import torch

    if kind == "bare":  # a plain pickle, not torch's zip format
        with open(path, "wb") as f:
            pickle.dump(Hostile(marker), f)
        return path
    payload = {"open": Hostile, "recbole": HostileRecBole}[kind](marker)
    checkpoint = {"config": payload, "state_dict": {"w": torch.ones(1)}, "other_parameter": None, "epoch": 0,
                  "run": {"options": {"model": "LightGCN", "dataset": "ml-100k"}}}
    torch.save(checkpoint, path, pickle_protocol=protocol)
    return path
