"""Pictures for people: sample grids as PNG files."""
from __future__ import annotations

import math

import numpy as np


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
    from PIL import Image

    from diffunlearn.io import atomic_path

    img = image_hwc[..., 0] if image_hwc.shape[-1] == 1 else image_hwc
    pil = Image.fromarray(img)
    if upscale > 1:
        pil = pil.resize((pil.width * upscale, pil.height * upscale), Image.NEAREST)
    with atomic_path(path) as tmp:
        pil.save(tmp)
