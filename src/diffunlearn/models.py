"""The denoiser: a diffusers ``UNet2DModel`` built from the ``model`` config and the data's shape."""
from __future__ import annotations


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
    from diffusers.models.unets.unet_2d import UNet2DModel

    if seed is not None:
        torch.manual_seed(seed)
    return UNet2DModel(**unet_config(model_cfg, sample_size, channels))


def build_scheduler(diffusion_cfg: dict, kind: str = "ddpm", clip_sample: bool = True):
    """The training / sampling scheduler (DDPM, epsilon prediction, no clipping of the variance).

    ``clip_sample``: clamp the predicted x0 to [-1, 1] while sampling (pixel space); latents are not bounded
    so latent diffusion samples without it, as diffusers' LDMPipeline schedulers do."""
    from diffusers import DDIMScheduler, DDPMScheduler

    kwargs = dict(
        num_train_timesteps=diffusion_cfg["num_train_timesteps"],
        beta_schedule=diffusion_cfg["beta_schedule"],
        beta_start=diffusion_cfg["beta_start"],
        beta_end=diffusion_cfg["beta_end"],
        prediction_type="epsilon",
        clip_sample=clip_sample,
    )
    if kind == "ddim":
        return DDIMScheduler(**kwargs)
    return DDPMScheduler(**kwargs, variance_type="fixed_small")


def count_parameters(module) -> int:
    return sum(p.numel() for p in module.parameters())
