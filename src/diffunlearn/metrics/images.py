"""Image sets for metrics: folders of image files and ``.npz`` sample arrays, read in batches.

Everything yields uint8 NHWC numpy batches, which is what the Inception extractor takes.
"""
from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from diffunlearn.io import IMAGE_EXTENSIONS, list_image_files

SAMPLES_KEY = "images"


def read_image(path: str | os.PathLike) -> np.ndarray:
    """HxWx3 uint8, decoded as pytorch-fid does (``PIL.Image.open(path).convert('RGB')``)."""
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def _stack_same_shape(arrays: Sequence[np.ndarray]) -> Iterator[np.ndarray]:
    """Stack consecutive arrays of equal shape (folders may mix image sizes)."""
    start = 0
    for i in range(1, len(arrays) + 1):
        if i == len(arrays) or arrays[i].shape != arrays[start].shape:
            yield np.stack(arrays[start:i])
            start = i


def iter_image_files(paths: Sequence[Path], batch_size: int, workers: int | None = None) -> Iterator[np.ndarray]:
    """uint8 NHWC batches of decoded files; the next batch is decoded in threads while this one is used."""
    workers = workers or min(4, os.cpu_count() or 1)
    chunks = [paths[i : i + batch_size] for i in range(0, len(paths), batch_size)]
    if not chunks:
        return
    with ThreadPoolExecutor(workers) as pool:
        futures = [pool.submit(read_image, p) for p in chunks[0]]
        for j in range(len(chunks)):
            current = futures
            futures = [pool.submit(read_image, p) for p in chunks[j + 1]] if j + 1 < len(chunks) else []
            yield from _stack_same_shape([f.result() for f in current])


def load_samples(path: str | os.PathLike) -> np.ndarray:
    """uint8 NHWC samples from an ``.npz`` (key ``images``) or ``.npy`` file (memory-mapped)."""
    path = Path(path)
    if path.suffix == ".npy":
        arr = np.load(path, mmap_mode="r")
    else:
        with np.load(path) as f:
            if SAMPLES_KEY not in f.files:
                raise ValueError(f"{path} has no '{SAMPLES_KEY}' array (keys: {', '.join(f.files)})")
            arr = f[SAMPLES_KEY]
    if arr.dtype != np.uint8 or arr.ndim not in (3, 4) or (arr.ndim == 4 and arr.shape[-1] not in (1, 3)):
        raise ValueError(f"{path}: samples must be uint8 NHWC with 1 or 3 channels, got {arr.dtype} {arr.shape}")
    return arr


class ImageSource:
    """A set of images given by a folder or a samples file; ``batches()`` yields uint8 NHWC arrays."""

    def __init__(self, path: str | os.PathLike, recursive: bool = True):
        self.path = Path(path)
        if self.path.is_dir():
            self.files = list_image_files(self.path, recursive)
            if not self.files:
                raise ValueError(f"no images ({', '.join(sorted(IMAGE_EXTENSIONS))}) under {self.path}")
            self.samples = None
        elif self.path.is_file():
            self.files = None
            self.samples = load_samples(self.path)
        else:
            raise FileNotFoundError(f"no such folder or file: {self.path}")

    def __len__(self) -> int:
        return len(self.files) if self.files is not None else len(self.samples)

    def batches(self, batch_size: int) -> Iterator[np.ndarray]:
        if self.files is not None:
            yield from iter_image_files(self.files, batch_size)
        else:
            for i in range(0, len(self.samples), batch_size):
                yield np.asarray(self.samples[i : i + batch_size])
