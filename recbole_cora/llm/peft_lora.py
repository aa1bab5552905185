"""Ordinary (shared, not per-sample) LoRA through peft, for TALLRec and CoLLM."""


def inject_lora(llm, config):
    """peft's LoRA layers injected in place into the frozen ``llm``; only their weights train."""
    from peft import LoraConfig, inject_adapter_in_model

    lora = LoraConfig(
        r=config["lora_rank"], lora_alpha=config["lora_alpha"], lora_dropout=config["lora_dropout"],
        target_modules=list(config["lora_target_modules"]), bias="none",
    )
    llm = inject_adapter_in_model(lora, llm)
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
