"""LLM loading: the embedded SmolLM2 GGUF (dequantised once, then cached as safetensors), HF folders,
and the errors a user sees for a wrong llm_path."""

import json

import pytest
import torch

from recbole_cora.llm import answer_token_ids, load_llm, resolve_llm_path
from recbole_cora.llm import loading
from recbole_cora.llm.loading import LLMLoadError

BASE = {"llm_dtype": "float32", "trust_remote_code": False, "device_map": None, "llm_init": None,
        "llm_config_overrides": None, "llm_max_memory": None, "llm_offload_dir": None, "seed": 0, "device": "cpu"}


def test_embedded_smollm2_gguf_is_dequantised_once_then_loaded_from_the_cache(tmp_path, monkeypatch):
    from transformers import AutoModelForCausalLM

    config = {**BASE, "llm_path": "smollm2-135m-instruct", "llm_cache_dir": str(tmp_path / "cache")}
    gguf = resolve_llm_path("smollm2-135m-instruct")
    assert gguf.suffix == ".gguf" and gguf.is_file()
    model, tokenizer = load_llm(config)
    (cache,) = [p for p in (tmp_path / "cache").iterdir() if not p.name.endswith(".lock")]  # beside it: its lock
    assert sorted(p.name for p in cache.iterdir() if p.suffix in (".json", ".safetensors")) >= ["config.json", "model.safetensors"]
    assert "quantization_config" not in json.loads((cache / "config.json").read_text())
    assert not any(p.requires_grad for p in model.parameters()) and not model.training

    def no_second_dequantisation(*args):
        raise AssertionError("the cache was not used")

    monkeypatch.setattr(loading, "_dequantise_gguf", no_second_dequantisation)
    again, _ = load_llm(config)
    reference = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    ids = torch.tensor([tokenizer.encode("#Question: Would a user enjoy \"Toy Story (1995)\"?\n#Answer:")])
    with torch.no_grad():
        expected = reference(ids).logits
        assert torch.equal(again(ids).logits, expected)
    assert tokenizer.convert_ids_to_tokens(answer_token_ids(tokenizer)) == ["ĠYes", "ĠNo"]


def test_wrong_llm_paths_say_what_to_give(tmp_path):
    with pytest.raises(LLMLoadError, match="does not exist.*Hugging Face model folder"):
        load_llm({**BASE, "llm_path": str(tmp_path / "nope"), "llm_cache_dir": None})
    (tmp_path / "empty").mkdir()
    with pytest.raises(LLMLoadError, match="no config.json"):
        load_llm({**BASE, "llm_path": str(tmp_path / "empty"), "llm_cache_dir": None})
    from transformers import DistilBertConfig, DistilBertModel  # an encoder with no causal-LM head

    DistilBertModel(DistilBertConfig(dim=32, n_layers=1, n_heads=2, hidden_dim=64)).save_pretrained(tmp_path / "bert")
    with pytest.raises(LLMLoadError, match="could not be loaded as a causal language model"):
        load_llm({**BASE, "llm_path": str(tmp_path / "bert"), "llm_cache_dir": None})
    with pytest.raises(LLMLoadError, match="llm_dtype 'float8'"):
        load_llm({**BASE, "llm_dtype": "float8", "llm_path": str(tmp_path / "bert"), "llm_cache_dir": None})
    with pytest.raises(LLMLoadError, match="set `llm_path`"):
        resolve_llm_path(None)


def test_llm_init_random_builds_the_folders_shape_with_seeded_random_weights(tiny_llm):
    from transformers import AutoModelForCausalLM

    pretrained = AutoModelForCausalLM.from_pretrained(tiny_llm, dtype=torch.float32)
    config = {**BASE, "llm_path": tiny_llm, "llm_cache_dir": None, "llm_init": "random", "seed": 7}
    model, tokenizer = load_llm(config)
    assert model.config.num_hidden_layers == pretrained.config.num_hidden_layers
    assert not torch.equal(model.model.layers[0].self_attn.q_proj.weight, pretrained.model.layers[0].self_attn.q_proj.weight)
    again, _ = load_llm(config)  # the weights come from the run's seed
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))
    assert not any(p.requires_grad for p in model.parameters()) and not model.training and tokenizer.pad_token_id is not None
    shaped, _ = load_llm({**config, "llm_dtype": "bfloat16", "llm_config_overrides": {"num_hidden_layers": 3, "intermediate_size": 96}})
    assert len(shaped.model.layers) == 3 and shaped.model.layers[2].mlp.up_proj.out_features == 96
    assert shaped.dtype == torch.bfloat16


def test_llm_init_and_placement_options_name_what_is_wrong(tiny_llm):
    config = {**BASE, "llm_path": tiny_llm, "llm_cache_dir": None}
    with pytest.raises(LLMLoadError, match="llm_init 'zeros'"):
        load_llm({**config, "llm_init": "zeros"})
    with pytest.raises(LLMLoadError, match="llm_config_overrides.*llm_init: random"):
        load_llm({**config, "llm_config_overrides": {"num_hidden_layers": 1}})
    with pytest.raises(LLMLoadError, match="'hidden_layers' is not a field of LlamaConfig"):
        load_llm({**config, "llm_init": "random", "llm_config_overrides": {"hidden_layers": 1}})
    with pytest.raises(LLMLoadError, match="llm_init: random builds the LLM on one device"):
        load_llm({**config, "llm_init": "random", "device_map": "auto"})
    with pytest.raises(LLMLoadError, match="llm_max_memory.*device_map: auto"):
        load_llm({**config, "llm_max_memory": {"cpu": "1GiB"}})
