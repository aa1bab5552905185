"""Ordinary (shared, not per-sample) LoRA through peft, for TALLRec and CoLLM."""

import contextlib

from recbole_cora.llm.loading import execution_device


def inject_lora(llm, config):
    """peft's LoRA layers injected in place into the frozen ``llm``; only their weights train."""
    from peft import LoraConfig, inject_adapter_in_model

    lora = LoraConfig(
        r=config["lora_rank"], lora_alpha=config["lora_alpha"], lora_dropout=config["lora_dropout"],
        target_modules=list(config["lora_target_modules"]), bias="none",
    )
    llm = inject_adapter_in_model(lora, llm)
    _materialise_offloaded(llm)
    for name, parameter in llm.named_parameters():
        parameter.requires_grad = is_lora(name)
    return llm


def is_lora(name):
    return ".lora_A." in name or ".lora_B." in name


def set_lora_dropout_mode(llm, mode):
    """The frozen LLM stays in eval mode; only its LoRA dropout follows train/eval."""
    for name, module in llm.named_modules():
        if name.endswith("lora_dropout"):
            module.train(mode)


def _materialise_offloaded(llm):
    """peft puts a layer's LoRA weights on its base weight's device, which for a layer that accelerate offloads
    (``device_map`` with ``llm_max_memory``) is the meta device: no values, and a backward that fails. Those
    LoRA weights are made on the device the layer runs on and initialised as peft initialises them."""
    from peft.tuners.lora import LoraLayer

    for module in llm.modules():
        if isinstance(module, LoraLayer) and any(p.device.type == "meta" for p in module.lora_A.parameters()):
            device = execution_device(module.get_base_layer())
            module.lora_A.to_empty(device=device)
            module.lora_B.to_empty(device=device)
            for adapter in module.lora_A:
                module.reset_lora_parameters(adapter, True)


@contextlib.contextmanager
def lora_disabled(llm):
    """peft's LoRA layers of ``llm`` bypassed (the frozen LLM alone) inside the block. peft's
    ``enable_adapters(True)`` marks every adapter weight trainable again, so the ``requires_grad`` flags (CoLLM's
    step 2 keeps its LoRA frozen) are put back as they were."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    flags = {name: p.requires_grad for name, p in llm.named_parameters()}
    layers = [m for m in llm.modules() if isinstance(m, BaseTunerLayer)]
    for layer in layers:
        layer.enable_adapters(False)
    try:
        yield llm
    finally:
        for layer in layers:
            layer.enable_adapters(True)
        for name, p in llm.named_parameters():
            p.requires_grad_(flags[name])
