"""LoRA unlearning: a PEFT LoRA adapter on the attention projections, fine-tuned on the retain set, merged.

As the attribution paper: rank 16, alpha 32, dropout 0.05 on ``to_q``, ``to_k``, ``to_v`` (unlearning.lora).
The adapter is injected with ``peft.inject_adapter_in_model``, which leaves only the adapter parameters
trainable; the training loop's optimizer skips the frozen ones (they get no gradient). A checkpoint of an
adapted model holds the merged weights as its plain diffusers UNet (``unet/``: sampling, margins and every
loader see an ordinary ``UNet2DModel``) and, for exact resumption, the adapted raw and EMA weights and the
adapter config under ``training_state/``.
"""
from __future__ import annotations

import copy

LORA_JSON = "lora.json"


def lora_settings(hp: dict) -> dict:
    """The peft ``LoraConfig`` keyword arguments of the unlearning.lora config block."""
    return {"r": hp["rank"], "lora_alpha": hp["alpha"], "lora_dropout": hp["dropout"],
            "target_modules": list(hp["target_modules"])}


def check_targets(unet, targets, where: str = "unlearning.lora.target_modules") -> None:
    """One-line error when the model has none of the target projections (e.g. no attention blocks)."""
    names = {name.rpartition(".")[2] for name, _ in unet.named_modules()}
    missing = [t for t in targets if t not in names]
    if missing:
        raise ValueError(f"{where}: the model has no {', '.join(missing)} layers (the attention projections are "
                         "to_q, to_k, to_v, to_out.0)")


def attach_lora(unet, settings: dict):
    """Inject a LoRA adapter (in place; only its parameters stay trainable). Returns the model."""
    from peft import LoraConfig, inject_adapter_in_model

    check_targets(unet, settings["target_modules"])
    return inject_adapter_in_model(LoraConfig(**settings), unet)


def lora_of(unet) -> dict | None:
    """The adapter settings of an adapted model (None for a plain one)."""
    config = getattr(unet, "peft_config", None)
    if not config:
        return None
    c = config["default"]
    return {"r": c.r, "lora_alpha": c.lora_alpha, "lora_dropout": c.lora_dropout,
            "target_modules": sorted(c.target_modules)}


def merged_copy(unet):
    """A plain copy of an adapted model: every LoRA layer merged into its base layer and replaced by it."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    plain = copy.deepcopy(unet)
    modules = dict(plain.named_modules())
    for name, module in list(modules.items()):
        if isinstance(module, BaseTunerLayer):
            module.merge(safe_merge=True)
            parent_name, _, child = name.rpartition(".")
            setattr(modules[parent_name] if parent_name else plain, child, module.get_base_layer())
    if hasattr(plain, "peft_config"):
        del plain.peft_config
    return plain.requires_grad_(True)


def lora_prepare(settings: dict):
    """A ``TrainRun.prepare``: the same adapter on the raw and the EMA model (the loop then copies raw to EMA)."""
    def prepare(raw, ema):
        attach_lora(raw, settings)
        attach_lora(ema, settings)

    return prepare
