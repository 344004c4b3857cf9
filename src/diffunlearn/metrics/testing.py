"""Randomly initialised FID-Inception weights for offline tests (never for reported numbers)."""
from __future__ import annotations

import os
from pathlib import Path


def write_random_fid_weights(path: str | os.PathLike, seed: int = 0) -> Path:
    """Save a random state dict with the layout of ``pt_inception-2015-12-05`` to ``path``.

    PyTorch's default init shrinks activations to ~1e-8 over 90 layers, which makes FID
    degenerate; He-normal convolutions and perturbed BatchNorm keep features O(1).
    """
    import torch

    from diffunlearn.metrics.inception import build_fid_inception

    gen = torch.Generator().manual_seed(seed)
    net = build_fid_inception()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.Conv2d):
                fan_in = m.weight[0].numel()
                m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * (2.0 / fan_in) ** 0.5)
            elif isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_((torch.rand(m.num_features, generator=gen) - 0.5) * 0.2)
                m.running_var.copy_(0.8 + 0.4 * torch.rand(m.num_features, generator=gen))
                m.weight.copy_(0.8 + 0.4 * torch.rand(m.num_features, generator=gen))
                m.bias.copy_((torch.rand(m.num_features, generator=gen) - 0.5) * 0.2)
        net.fc.weight.copy_(torch.randn(net.fc.weight.shape, generator=gen) * 0.05)
        net.fc.bias.copy_(torch.randn(net.fc.bias.shape, generator=gen) * 0.05)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), path)
    return path
