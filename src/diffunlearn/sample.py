"""Sampling a checkpoint: DDPM ancestral sampling (default) or DDIM, with fixed, model-independent noise."""
from __future__ import annotations

import math

import numpy as np


def initial_noise(num_samples: int, shape: tuple[int, int, int], seed: int, start: int = 0, device="cpu"):
    """Starting noise of samples ``start .. start+num_samples``; sample i's noise depends only on (seed, i)."""
    import torch

    out = []
    for i in range(start, start + num_samples):
        g = torch.Generator().manual_seed(seed * 1_000_003 + i)
        out.append(torch.randn((1, *shape), generator=g))
    return torch.cat(out).to(device)


def sample_images(unet, scheduler, num_samples: int, *, num_inference_steps: int, seed: int = 0,
                  batch_size: int = 256, eta: float = 0.0, device=None, progress=None) -> np.ndarray:
    """Run the reverse chain with a diffusers scheduler's ``step()``; return uint8 NHWC samples."""
    import torch

    from diffunlearn.data import to_uint8

    device = device or next(unet.parameters()).device
    unet = unet.to(device).eval()
    shape = (unet.config.in_channels, unet.config.sample_size, unet.config.sample_size)
    scheduler.set_timesteps(num_inference_steps)
    timesteps = scheduler.timesteps.to(device)
    is_ddim = type(scheduler).__name__ == "DDIMScheduler"
    out = []
    with torch.inference_mode():
        for b in range(math.ceil(num_samples / batch_size)):
            start = b * batch_size
            n = min(batch_size, num_samples - start)
            x = initial_noise(n, shape, seed, start=start, device=device)
            # Ancestral noise of every step is drawn from one generator per batch, seeded by (seed, batch).
            g = torch.Generator(device=device).manual_seed(seed * 7_777_777 + b)
            for t in timesteps:
                eps = unet(x, t.expand(n)).sample
                if is_ddim:
                    x = scheduler.step(eps, t, x, eta=eta, generator=g).prev_sample
                else:
                    x = scheduler.step(eps, t, x, generator=g).prev_sample
            out.append(to_uint8(x))
            if progress:
                progress(start + n)
    return np.concatenate(out)


def image_grid(images: np.ndarray, ncols: int | None = None) -> np.ndarray:
    """Tile uint8 NHWC images into one uint8 HWC picture with a 1-pixel border."""
    n, h, w, c = images.shape
    ncols = ncols or int(math.ceil(math.sqrt(n)))
    nrows = int(math.ceil(n / ncols))
    grid = np.full((nrows * (h + 1) + 1, ncols * (w + 1) + 1, c), 255, dtype=np.uint8)
    for i, im in enumerate(images):
        r, col = divmod(i, ncols)
        grid[1 + r * (h + 1) : 1 + r * (h + 1) + h, 1 + col * (w + 1) : 1 + col * (w + 1) + w] = im
    return grid


def save_png(path, image_hwc: np.ndarray, upscale: int = 1) -> None:
    import os

    from PIL import Image

    img = image_hwc[..., 0] if image_hwc.shape[-1] == 1 else image_hwc
    pil = Image.fromarray(img)
    if upscale > 1:
        pil = pil.resize((pil.width * upscale, pil.height * upscale), Image.NEAREST)
    tmp = f"{path}.tmp-{os.getpid()}.png"
    pil.save(tmp)
    os.replace(tmp, path)
