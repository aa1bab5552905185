import torch
from recbole.data import data_preparation
from recbole.utils import init_seed

from recbole_cora.config import Config
from recbole_cora.model.llm_recommender.tallrec import TALLRec
from recbole_cora.utils import create_dataset, get_trainer

from conftest import SMALL_CORA
from helpers import assert_same_scores_and_gradients, offload_options


def build(tiny_llm, **extra):
    config = Config("TALLRec", "ml-100k", config_dict={**SMALL_CORA, "llm_path": tiny_llm, **extra})
    init_seed(config["seed"], config["reproducibility"])
    train, valid, test = data_preparation(config, create_dataset(config))
    return config, TALLRec(config, train._dataset), (train, valid, test)


def test_tallrec_trains_only_lora_and_starts_as_the_frozen_llm(tiny_llm):
    config, model, (train, valid, _) = build(tiny_llm, train_rows_per_epoch=64, eval_rows=64)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_A" in n or "lora_B" in n for n in trainable)
    assert {n.split(".")[-4] for n in trainable} == {"q_proj", "v_proj"}  # ...q_proj.lora_A.default.weight
    frozen = {n: t.clone() for n, t in model.state_dict().items() if "lora_" not in n}
    trainer = get_trainer(config["MODEL_TYPE"], "TALLRec", config)(config, model)
    trainer.fit(train, valid)
    for name, before in frozen.items():
        assert torch.equal(model.state_dict()[name], before), name
    changed = [n for n, t in model.trainable_state_dict().items() if "lora_B" in n and t.abs().sum() > 0]
    assert changed  # lora_B starts at 0 and has moved
    model.train()
    assert not model.llm.training and any(m.training for n, m in model.llm.named_modules() if n.endswith("lora_dropout"))


def test_peft_lora_on_layers_offloaded_to_disk_is_made_where_they_run(tiny_llm, tmp_path):
    # peft would leave the LoRA weights of an offloaded layer on the meta device: no values, a failing backward
    config, model, (train, _, _) = build(tiny_llm, **offload_options(tiny_llm, tmp_path / "offload"))
    assert "disk" in model.llm.hf_device_map.values()
    _, reference, _ = build(tiny_llm)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    reference.load_state_dict(model.trainable_state_dict(), strict=False)
    batch = train.collate_fn(list(range(16)))
    assert_same_scores_and_gradients(model, reference, batch[0] if isinstance(batch, tuple) else batch)
