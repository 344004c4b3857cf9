"""Improved precision and recall (Kynkäänniemi et al. 2019) on any feature vectors.

A sample's manifold ball is centred on it with radius its distance to its k-th nearest
neighbour in its own set (itself excluded). Precision: share of fake samples inside at least
one real ball. Recall: share of real samples inside at least one fake ball. Distances are
computed in blocks (torch, float64), so 50k x 50k never sits in memory.
"""
from __future__ import annotations

import numpy as np


def _as_tensor(x, device, dtype):
    import torch

    if isinstance(x, torch.Tensor):
        return x.detach().to(device=device, dtype=dtype)
    return torch.as_tensor(np.asarray(x), dtype=dtype, device=device)


def _sq_dists(a, b, b_sq):
    return (a.pow(2).sum(1, keepdim=True) + b_sq - 2 * a @ b.T).clamp_min_(0)


def knn_radii(features, k: int = 3, block: int = 1024):
    """Squared distance of each row to its k-th nearest other row (the row itself excluded)."""
    import torch

    if len(features) <= k:
        raise ValueError(f"need more than k={k} samples, got {len(features)}")
    sq = features.pow(2).sum(1)
    out = []
    for i in range(0, len(features), block):
        d = _sq_dists(features[i : i + block], features, sq)
        # the row's own distance (~0) is the smallest, so the (k+1)-th smallest is the k-th neighbour
        out.append(torch.kthvalue(d, k + 1, dim=1).values)
    return torch.cat(out)


def _coverage(queries, centres, radii, block: int) -> float:
    """Share of query rows within (squared) radius of at least one centre."""
    sq = centres.pow(2).sum(1)
    inside = 0
    for i in range(0, len(queries), block):
        d = _sq_dists(queries[i : i + block], centres, sq)
        inside += int((d <= radii[None, :]).any(dim=1).sum())
    return inside / len(queries)


def precision_recall(real_features, fake_features, k: int = 3, block: int = 1024, device=None,
                     dtype=None) -> tuple[float, float]:
    """(precision, recall) of fake features against real features, k nearest neighbours."""
    import torch

    device = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = dtype or torch.float64
    with torch.inference_mode():
        real = _as_tensor(real_features, device, dtype)
        fake = _as_tensor(fake_features, device, dtype)
        if real.ndim != 2 or fake.ndim != 2 or real.shape[1] != fake.shape[1]:
            raise ValueError(f"features must be [N, D] with equal D, got {tuple(real.shape)} and {tuple(fake.shape)}")
        real_r = knn_radii(real, k, block)
        fake_r = knn_radii(fake, k, block)
        precision = _coverage(fake, real, real_r, block)
        recall = _coverage(real, fake, fake_r, block)
    return precision, recall
