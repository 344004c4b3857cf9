"""The seed that drives a model's randomness (initial weights, data order, timesteps, noise), per model family.

docs/design.md (Reading KLOM): oracles must be independent draws, never the same initial weights or noise stream as the
original of the same seed index. ``original.s<k>`` keeps seed k (today's randomness, so its results stay valid);
every other family gets a seed derived from (family, k) by a hash, at or above 2**32, so it can equal neither an
original's seed nor, in practice, another family's.
"""
from __future__ import annotations

import hashlib

# Derived seeds lie in [_DERIVED_BASE, _DERIVED_BASE + _DERIVED_SPAN): above every seed index a config uses, and
# below 2**63 (torch generators and the training loop's per-step seeds take them).
_DERIVED_BASE = 2**32
_DERIVED_SPAN = 2**62 - 2**32


def model_rng_seed(family: str, seed_index: int) -> int:
    """The RNG seed of model ``<family>.s<seed_index>``: the index itself for 'original', a hash of both otherwise."""
    seed_index = int(seed_index)
    if seed_index < 0:
        raise ValueError(f"seed index must be non-negative, got {seed_index}")
    if family == "original":
        return seed_index
    digest = hashlib.sha256(f"{family}/s{seed_index}".encode()).digest()
    return _DERIVED_BASE + int.from_bytes(digest[:8], "little") % _DERIVED_SPAN


def training_rng_seed(model: str) -> int:
    """The RNG seed a model name trains with: :func:`model_rng_seed` of its family and seed index."""
    from diffunlearn import naming

    return model_rng_seed(naming.family(model), naming.seed(model))
