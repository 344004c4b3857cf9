"""pytorch-fid's FID-InceptionV3 (TF ``inception-2015-12-05`` port) as a batched feature extractor.

Same network, resizing (bilinear to 299x299, ``align_corners=False``) and input scaling
(uint8 / 255, then ``2x - 1``) as pytorch-fid, so features equal pytorch-fid's up to float
rounding. Weights come from a given file, the torch hub cache, or pytorch-fid's release URL;
the weights' sha256 is kept so every metric record can name it.

Outputs per image: the 2048-d pool3 features and the 1008-way logits
``pool3 @ fc.weight.T`` (no bias; all 1008 classes), the "logits_unbiased" that
torch-fidelity and the original TF Inception Score code (improved-GAN) feed to the softmax.
"""
from __future__ import annotations

import contextlib
import os
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from diffunlearn.io import atomic_path, sha256_file

FID_WEIGHTS_URL = (
    "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
    "pt_inception-2015-12-05-6726825d.pth"
)
WEIGHTS_FILENAME = "pt_inception-2015-12-05-6726825d.pth"
FEATURE_DIM = 2048
NUM_LOGITS = 1008
INPUT_SIZE = 299


def default_weights_path() -> Path:
    """Where torch.hub (and so pytorch-fid) keeps the FID-Inception weights."""
    return Path(torch.hub.get_dir()) / "checkpoints" / WEIGHTS_FILENAME


def missing_weights_message(path: Path | None = None) -> str:
    """One line: which file to fetch, from where, and where to put it."""
    where = default_weights_path()
    head = f"FID-Inception weights not found at {path}; " if path is not None else "FID-Inception weights not found; "
    return (
        head + f"fetch {WEIGHTS_FILENAME} from {FID_WEIGHTS_URL} and put it at {where} "
        f"(or set metrics.inception_weights: <file> in the config)"
    )


def _download(url: str, dest: Path, timeout: float = 30.0) -> None:
    """Download ``url`` to ``dest`` atomically; raises OSError (URLError included) when offline."""
    with atomic_path(dest) as tmp, open(tmp, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
        while block := resp.read(1 << 20):
            out.write(block)


def resolve_weights(weights: str | os.PathLike | None = None, download: bool = True) -> Path:
    """The weights file to load: ``weights`` if given, else the hub cache, else a download."""
    if weights is not None:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise FileNotFoundError(missing_weights_message(path))
        return path
    path = default_weights_path()
    if path.is_file():
        return path
    if download:
        try:
            _download(FID_WEIGHTS_URL, path)
            return path
        except OSError:
            pass
    raise FileNotFoundError(missing_weights_message())


def build_fid_inception() -> nn.Module:
    """pytorch-fid's ``fid_inception_v3`` architecture, without its weight download."""
    import torchvision
    from pytorch_fid.inception import FIDInceptionA, FIDInceptionC, FIDInceptionE_1, FIDInceptionE_2

    net = torchvision.models.inception_v3(weights=None, num_classes=NUM_LOGITS, aux_logits=False, init_weights=False)
    net.Mixed_5b = FIDInceptionA(192, pool_features=32)
    net.Mixed_5c = FIDInceptionA(256, pool_features=64)
    net.Mixed_5d = FIDInceptionA(288, pool_features=64)
    net.Mixed_6b = FIDInceptionC(768, channels_7x7=128)
    net.Mixed_6c = FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6d = FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6e = FIDInceptionC(768, channels_7x7=192)
    net.Mixed_7b = FIDInceptionE_1(1280)
    net.Mixed_7c = FIDInceptionE_2(2048)
    return net


class FIDInceptionTrunk(nn.Module):
    """Input (N,3,H,W) float in [0, 1] -> (pool3 features [N,2048], logits [N,1008])."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.body = nn.Sequential(
            net.Conv2d_1a_3x3, net.Conv2d_2a_3x3, net.Conv2d_2b_3x3, nn.MaxPool2d(3, 2),
            net.Conv2d_3b_1x1, net.Conv2d_4a_3x3, nn.MaxPool2d(3, 2),
            net.Mixed_5b, net.Mixed_5c, net.Mixed_5d,
            net.Mixed_6a, net.Mixed_6b, net.Mixed_6c, net.Mixed_6d, net.Mixed_6e,
            net.Mixed_7a, net.Mixed_7b, net.Mixed_7c,
        )
        self.register_buffer("fc_weight", net.fc.weight.detach().clone())

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False)
        x = 2 * x - 1
        x = self.body(x)
        features = x.mean(dim=(2, 3))
        return features, features @ self.fc_weight.T


def to_float_nchw(batch, device=None) -> torch.Tensor:
    """A batch of images -> float32 NCHW in [0, 1] with 3 channels.

    numpy: uint8 NHWC or NHW. torch: uint8 NHWC or NCHW (NHWC when the last dim is 1 or 3 and
    dim 1 is not), or float NCHW already in [0, 1]. One channel is repeated to three.
    Moved to ``device`` before the float conversion (uint8 is 4x less to copy).
    """
    if isinstance(batch, np.ndarray):
        if batch.dtype != np.uint8:
            raise ValueError(f"numpy images must be uint8 NHWC, got {batch.dtype}")
        t = torch.from_numpy(np.ascontiguousarray(batch))
        t = t.unsqueeze(-1) if t.ndim == 3 else t
        nhwc = True
    else:
        t = batch
        if t.ndim == 3:
            t = t.unsqueeze(1)
        nhwc = t.dtype == torch.uint8 and t.ndim == 4 and t.shape[-1] in (1, 3) and t.shape[1] not in (1, 3)
    if device is not None:
        t = t.to(device, non_blocking=True)
    if t.ndim != 4:
        raise ValueError(f"expected a batch of images with 4 dims, got shape {tuple(t.shape)}")
    if nhwc:
        t = t.permute(0, 3, 1, 2)
    if t.dtype == torch.uint8:
        t = t.float().div(255)  # torchvision's ToTensor, as pytorch-fid reads files
    elif t.is_floating_point():
        t = t.float()
    else:
        raise ValueError(f"images must be uint8 or float in [0, 1], got {t.dtype}")
    if t.shape[1] == 1:
        t = t.expand(-1, 3, -1, -1)
    if t.shape[1] != 3:
        raise ValueError(f"images must have 1 or 3 channels, got shape {tuple(t.shape)}")
    return t


def iter_batches(images, batch_size: int) -> Iterator:
    """Batches of an array/tensor (sliced) or of any iterable of batches (passed through)."""
    if isinstance(images, (np.ndarray, torch.Tensor)):
        for i in range(0, len(images), batch_size):
            yield images[i : i + batch_size]
    else:
        yield from images


# Measured on a 2-core AVX-512 VM (benchmarks/bench_fid.py): micro-batches of 16 running on two threads
# with one intra-op thread each take 73 ms / image, against 77 ms for batches of 25 and 85-90 ms for
# batches of 100-200 on one two-thread op pool (smaller activations stay in cache; the many small
# non-convolution ops stop waiting on each other).
CPU_MICRO_BATCH = 16


def cpu_workers() -> int:
    """Micro-batches run side by side on the CPU: one per intra-op thread the process was given."""
    return max(1, torch.get_num_threads())


def resolve_device(device=None) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class InceptionExtractor:
    """FID-InceptionV3 features and logits for batches of images."""

    name = "inception-v3-fid"

    def __init__(self, trunk: FIDInceptionTrunk, weights_path: Path, weights_sha256: str, device: torch.device):
        self.trunk = trunk
        self.weights_path = Path(weights_path)
        self.weights_sha256 = weights_sha256
        self.device = device

    def describe(self) -> dict:
        """What a metric record should name about the extractor."""
        return {"feature_extractor": self.name, "weights_path": str(self.weights_path), "weights_sha256": self.weights_sha256}

    def iter_features_and_logits(self, images, batch_size: int = 200) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield (features float32 [b,2048], logits float32 [b,1008]) CPU tensors per batch.

        ``images``: uint8 NHWC array/tensor, float NCHW tensor in [0, 1], or an iterable of such batches
        (e.g. a generator reading files), so 50k images never need to be in memory at once.
        On the CPU each batch is cut into micro-batches of ``CPU_MICRO_BATCH`` images that run side by
        side, one per thread with one intra-op thread each (see ``cpu_workers``).
        """
        cpu = self.device.type == "cpu"
        with ThreadPoolExecutor(cpu_workers()) if cpu else contextlib.nullcontext() as pool:
            for batch in iter_batches(images, batch_size):
                for i in range(0, len(batch), batch_size):
                    chunk = batch[i : i + batch_size]
                    if not cpu:
                        yield self._forward(chunk)
                        continue
                    micro = [chunk[j : j + CPU_MICRO_BATCH] for j in range(0, len(chunk), CPU_MICRO_BATCH)]
                    threads = torch.get_num_threads()
                    torch.set_num_threads(1)  # process-wide; restored before the caller runs again
                    try:
                        parts = list(pool.map(self._forward, micro))
                    finally:
                        torch.set_num_threads(threads)
                    yield torch.cat([f for f, _ in parts]), torch.cat([lg for _, lg in parts])

    def _forward(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.inference_mode():
            x = to_float_nchw(batch, self.device)
            if self.device.type == "cpu":
                x = x.contiguous(memory_format=torch.channels_last)
            feats, logits = self.trunk(x)
            return feats.float().cpu(), logits.float().cpu()

    def features_and_logits(self, images, batch_size: int = 200) -> tuple[np.ndarray, np.ndarray]:
        """All features [N,2048] and logits [N,1008] as float64 numpy arrays."""
        feats, logits = [], []
        for f, lg in self.iter_features_and_logits(images, batch_size):
            feats.append(f.numpy().astype(np.float64))
            logits.append(lg.numpy().astype(np.float64))
        if not feats:
            return np.empty((0, FEATURE_DIM)), np.empty((0, NUM_LOGITS))
        return np.concatenate(feats), np.concatenate(logits)

    def features(self, images, batch_size: int = 200) -> np.ndarray:
        return self.features_and_logits(images, batch_size)[0]


def load_inception(weights: str | os.PathLike | None = None, device=None, download: bool = True,
                   fuse: bool = True) -> InceptionExtractor:
    """FID-Inception extractor from ``weights`` (a file), the hub cache, or pytorch-fid's URL.

    Raises FileNotFoundError with a one-line fix when no weights are available offline.
    ``fuse`` folds BatchNorm into the convolutions and merges each block's 1x1 convolutions
    (same function up to float rounding, faster; see ``inception_fused``).
    """
    path = resolve_weights(weights, download=download)
    device = resolve_device(device)
    net = build_fid_inception()
    state = torch.load(path, map_location="cpu", weights_only=True)
    net.load_state_dict(state)
    net.eval()
    if fuse:
        from diffunlearn.metrics.inception_fused import fuse_inception

        fuse_inception(net)
    trunk = FIDInceptionTrunk(net)
    trunk = trunk.eval().requires_grad_(False).to(device)
    if device.type == "cpu":
        trunk = trunk.to(memory_format=torch.channels_last)
    return InceptionExtractor(trunk, path, sha256_file(path), device)
