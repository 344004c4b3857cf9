"""The denoiser: a diffusers ``UNet2DModel`` built from the ``model`` config and the data's shape."""
from __future__ import annotations

import importlib.util
import os
import sys
import types


def unet_config(model_cfg: dict, sample_size: int, channels: int) -> dict:
    """Keyword arguments of ``UNet2DModel`` for a config; attention where the feature map is listed."""
    levels = len(model_cfg["block_out_channels"])
    resolutions = [sample_size // (2**i) for i in range(levels)]
    attn = [r in set(model_cfg["attention_resolutions"]) for r in resolutions]
    down = tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in attn)
    up = tuple("AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attn))
    cfg = dict(
        sample_size=sample_size,
        in_channels=channels,
        out_channels=channels,
        block_out_channels=tuple(model_cfg["block_out_channels"]),
        layers_per_block=model_cfg["layers_per_block"],
        down_block_types=down,
        up_block_types=up,
        norm_num_groups=model_cfg["norm_num_groups"],
        dropout=model_cfg["dropout"],
    )
    if model_cfg.get("attention_head_dim"):
        cfg["attention_head_dim"] = model_cfg["attention_head_dim"]
    return cfg


def build_unet(model_cfg: dict, sample_size: int, channels: int, seed: int | None = None):
    import torch

    if seed is not None:
        torch.manual_seed(seed)
    return unet_class()(**unet_config(model_cfg, sample_size, channels))


# diffusers packages whose __init__ imports every model of their kind (all UNets; all ~60 transformers, peft
# among their imports) although UNet2DModel needs two modules of each. They are run on first use instead.
_DEFERRED_PACKAGES = ("diffusers.models.unets", "diffusers.models.transformers")


def unet_class():
    """diffusers' ``UNet2DModel``, imported without running the __init__ of _DEFERRED_PACKAGES: each is put
    in sys.modules as its own module object whose __init__ runs, as written, the first time code asks it
    for an attribute (``from diffusers.models.transformers import X``), so nothing else changes.
    DIFFUNLEARN_EAGER_DIFFUSERS=1 turns this off."""
    if os.environ.get("DIFFUNLEARN_EAGER_DIFFUSERS", "0") != "1":
        for name in _DEFERRED_PACKAGES:
            _defer_package_init(name)
    from diffusers.models.unets.unet_2d import UNet2DModel

    return UNet2DModel


class _DeferredPackage(types.ModuleType):
    def __getattr__(self, attr):
        if attr.startswith("__") or self.__dict__.get("_init_ran"):
            raise AttributeError(f"module {self.__name__!r} has no attribute {attr!r}")
        self.__dict__["_init_ran"] = True
        self.__spec__.loader.exec_module(self)
        return getattr(self, attr)


def _defer_package_init(name: str) -> None:
    if name in sys.modules:
        return
    spec = importlib.util.find_spec(name)
    if spec is None or spec.submodule_search_locations is None:
        return
    module = importlib.util.module_from_spec(spec)
    module.__class__ = _DeferredPackage
    sys.modules[name] = module


def scheduler_class(kind: str = "ddpm"):
    """diffusers' DDPMScheduler or DDIMScheduler (the scheduler modules only)."""
    if kind == "ddim":
        from diffusers.schedulers.scheduling_ddim import DDIMScheduler

        return DDIMScheduler
    from diffusers.schedulers.scheduling_ddpm import DDPMScheduler

    return DDPMScheduler


def build_scheduler(diffusion_cfg: dict, kind: str = "ddpm", clip_sample: bool = True):
    """The training / sampling scheduler (DDPM, epsilon prediction, no clipping of the variance).

    ``clip_sample``: clamp the predicted x0 to [-1, 1] while sampling (pixel space); latents are not bounded
    so latent diffusion samples without it, as diffusers' LDMPipeline schedulers do."""
    kwargs = dict(
        num_train_timesteps=diffusion_cfg["num_train_timesteps"],
        beta_schedule=diffusion_cfg["beta_schedule"],
        beta_start=diffusion_cfg["beta_start"],
        beta_end=diffusion_cfg["beta_end"],
        prediction_type="epsilon",
        clip_sample=clip_sample,
    )
    if kind == "ddim":
        return scheduler_class("ddim")(**kwargs)
    return scheduler_class("ddpm")(**kwargs, variance_type="fixed_small")


def count_parameters(module) -> int:
    return sum(p.numel() for p in module.parameters())
