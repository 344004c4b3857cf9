"""Inception Score (Salimans et al. 2016) from class logits, as torch-fidelity computes it.

For the FID-Inception network the logits are the 1008-way ``pool3 @ fc.weight.T`` (no bias, all
1008 classes; torch-fidelity's ``logits_unbiased``, as in the original TF code). Works on any
classifier's logits (numpy or torch), e.g. a small dataset classifier.
"""
from __future__ import annotations

import numpy as np


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(axis=1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=1, keepdims=True))


def inception_score(logits, splits: int = 10, shuffle: bool = True, seed: int = 2020) -> tuple[float, float]:
    """(mean, std) over ``splits`` chunks of exp(E_x KL(p(y|x) || p(y))).

    As torch-fidelity's ``isc_features_to_metric``: rows shuffled with
    ``np.random.RandomState(seed).permutation`` (``shuffle=False`` keeps order), float64 softmax,
    chunk i = rows ``i*N//splits`` to ``(i+1)*N//splits``, population std (``np.std``).
    """
    if hasattr(logits, "detach"):
        logits = logits.detach().cpu().numpy()
    x = np.asarray(logits, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"logits must be [N, C], got shape {x.shape}")
    n = len(x)
    if splits < 1 or n < splits:
        raise ValueError(f"need at least {splits} samples for {splits} splits, got {n}")
    if shuffle:
        x = x[np.random.RandomState(seed).permutation(n)]
    log_p = _log_softmax(x)
    p = np.exp(log_p)
    scores = []
    for i in range(splits):
        lo, hi = i * n // splits, (i + 1) * n // splits
        p_chunk, log_p_chunk = p[lo:hi], log_p[lo:hi]
        log_q = np.log(p_chunk.mean(axis=0, keepdims=True))
        kl = np.where(p_chunk > 0, p_chunk * (log_p_chunk - log_q), 0.0).sum(axis=1).mean()
        scores.append(np.exp(kl))
    return float(np.mean(scores)), float(np.std(scores))
