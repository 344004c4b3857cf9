"""One streaming pass of a feature extractor over an image set: FID statistics, logits, features."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from diffunlearn.metrics.fid import RunningStats


@dataclass
class Extracted:
    mu: np.ndarray
    sigma: np.ndarray
    count: int
    logits: np.ndarray | None = None  # [N, C] float64, kept when asked (for IS)
    features: np.ndarray | None = None  # [N, D] float32, kept when asked (for precision / recall)


def extract(extractor, images, batch_size: int = 200, keep_logits: bool = False,
            keep_features: bool = False) -> Extracted:
    """Stream ``images`` (array, tensor or iterable of batches) through ``extractor``.

    Memory is bounded by one batch plus the D x D running sums, unless logits or features are kept.
    """
    stats = None
    logits, features = [], []
    for feats, lg in extractor.iter_features_and_logits(images, batch_size):
        if stats is None:
            stats = RunningStats(feats.shape[1])
        stats.update(feats)
        if keep_logits:
            logits.append(np.asarray(lg, dtype=np.float64))
        if keep_features:
            features.append(np.asarray(feats, dtype=np.float32))
    if stats is None:
        raise ValueError("no images")
    return Extracted(
        mu=stats.mean(), sigma=stats.cov(), count=stats.count,
        logits=np.concatenate(logits) if keep_logits else None,
        features=np.concatenate(features) if keep_features else None,
    )
