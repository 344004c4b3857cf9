"""Removal distributions: which training units each attribution model keeps.

A subset is a boolean keep-mask over units (True = kept). Units are examples or groups
(a class, an identity, any label column); ``units_to_examples`` maps unit masks to the
example masks a training run needs.
"""
from __future__ import annotations

import operator

import numpy as np

REMOVAL_KINDS = ("datashapley", "datamodel", "uniform", "loo")
# The draws each estimator is sound on: KernelSHAP's regression weights rows uniformly, so the Shapley kernel
# must be in the sampling; the difference-of-means Banzhaf value is unbiased on uniform (p = 1/2) draws; the
# datamodel is the linear model fitted on alpha-subsets; leave-one-out needs the n leave-one-out subsets.
ESTIMATOR_DISTRIBUTION = {"shapley": "datashapley", "banzhaf": "uniform", "datamodel": "datamodel", "loo": "loo"}


def check_pairing(estimators, removal: str | None) -> None:
    """Refuse a shared removal distribution that some estimator is not sound on (None: per-estimator draws)."""
    if removal is None:
        return
    for est in estimators:
        need = ESTIMATOR_DISTRIBUTION[est]
        if removal != need:
            raise ValueError(f"attribution.removal: {removal} draws are unsound for the {est} estimator (it needs "
                             f"{need} draws); set attribution.removal: null to draw for each estimator")


def estimator_rows(estimators, removal: str | None, num_subsets: int) -> dict:
    """{estimator: range of rows of the subset table (the d<i> models) it is fitted on}. Shared draws (a
    ``removal`` kind): every estimator the same rows; per-estimator draws (None): consecutive blocks."""
    check_pairing(estimators, removal)
    if removal is not None:
        return {est: range(num_subsets) for est in estimators}
    return {est: range(i * num_subsets, (i + 1) * num_subsets) for i, est in enumerate(estimators)}


def num_subset_models(estimators, removal: str | None, num_subsets: int) -> int:
    """How many subset models (d<i>) a method trains: the rows of the subset table."""
    rows = estimator_rows(estimators, removal, num_subsets)
    return max((r.stop for r in rows.values()), default=0)


def draw_for_estimators(estimators, removal: str | None, n_units: int, num_subsets: int, seed: int,
                        alpha: float = 0.5) -> np.ndarray:
    """The subset table: shared draws of ``removal``, or each estimator's block drawn from its own distribution
    (seeded by (seed, distribution), so an estimator's draws do not depend on the others listed)."""
    rows = estimator_rows(estimators, removal, num_subsets)
    if removal is not None:
        return draw_subsets(removal, n_units, num_subsets, seed, alpha=alpha)
    blocks = []
    for est in rows:
        kind = ESTIMATOR_DISTRIBUTION[est]
        blocks.append(draw_subsets(kind, n_units, num_subsets, [seed, REMOVAL_KINDS.index(kind)], alpha=alpha))
    return np.concatenate(blocks) if blocks else np.zeros((0, n_units), dtype=bool)


def datashapley_size_probabilities(n_units: int) -> np.ndarray:
    """P(|S| = s) for s = 1 .. n-1 under the kernel-SHAP weights, ∝ (n-1) / (s (n-s))."""
    n = _int_at_least(n_units, "n_units", minimum=2)
    sizes = np.arange(1, n)
    weights = (n - 1) / (sizes * (n - sizes))
    return weights / weights.sum()


def draw_subsets(kind: str, n_units: int, num_subsets: int, seed, alpha: float = 0.5) -> np.ndarray:
    """Draw ``num_subsets`` keep-masks over ``n_units`` units; bool array [num_subsets, n_units].

    kind:
      "datashapley": size s in 1..n-1 with P(s) ∝ (n-1)/(s(n-s)), then a uniform subset of size s;
      "datamodel":   a uniform subset of floor(alpha * n) units (0 < alpha < 1);
      "uniform":     every unit kept independently with probability 1/2;
      "loo":         row i keeps all units but unit i mod n (the seed is not used).
    The same (kind, n_units, num_subsets, seed, alpha) always gives the same masks.
    """
    if kind not in REMOVAL_KINDS:
        raise ValueError(f"unknown removal distribution {kind!r}; expected one of {REMOVAL_KINDS}")
    n = _int_at_least(n_units, "n_units", minimum=2 if kind == "datashapley" else 1)
    m = _int_at_least(num_subsets, "num_subsets", minimum=0)
    rng = np.random.default_rng(seed)

    if kind == "datashapley":
        sizes = 1 + rng.choice(n - 1, size=m, p=datashapley_size_probabilities(n))
        return _uniform_subsets_of_sizes(rng, n, sizes)
    if kind == "datamodel":
        alpha = float(alpha)
        if not 0.0 < alpha < 1.0:
            raise ValueError(f"datamodel alpha must be in (0, 1), got {alpha!r}")
        return _uniform_subsets_of_sizes(rng, n, np.full(m, int(np.floor(alpha * n))))
    if kind == "uniform":
        return rng.random((m, n)) < 0.5
    masks = np.ones((m, n), dtype=bool)
    masks[np.arange(m), np.arange(m) % n] = False
    return masks


def units_to_examples(kept_units: np.ndarray, unit_of_example: np.ndarray) -> np.ndarray:
    """Example keep-masks from unit keep-masks.

    kept_units: bool [n_units] (or [num_subsets, n_units]); unit_of_example: int [n_examples],
    the unit index of each example (its own index, its class, ...). Returns bool [n_examples]
    (or [num_subsets, n_examples]).
    """
    kept_units = np.asarray(kept_units, dtype=bool)
    unit_of_example = np.asarray(unit_of_example)
    if unit_of_example.ndim != 1 or not np.issubdtype(unit_of_example.dtype, np.integer):
        raise ValueError(
            f"unit_of_example must be a 1-D integer array, got shape {unit_of_example.shape} "
            f"dtype {unit_of_example.dtype}"
        )
    n_units = kept_units.shape[-1]
    bad = (unit_of_example < 0) | (unit_of_example >= n_units)
    if bad.any():
        # negative indices would otherwise wrap around silently
        raise ValueError(
            f"unit_of_example has indices outside 0..{n_units - 1}: {np.unique(unit_of_example[bad])[:10]}"
        )
    return kept_units[..., unit_of_example]


def _uniform_subsets_of_sizes(rng: np.random.Generator, n: int, sizes: np.ndarray) -> np.ndarray:
    # rank of i.i.d. uniform keys is a uniform random permutation; keep the `size` lowest ranks
    ranks = np.argsort(np.argsort(rng.random((len(sizes), n)), axis=1), axis=1)
    return ranks < sizes[:, None]


def _int_at_least(value, name: str, minimum: int) -> int:
    if isinstance(value, bool):
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    try:
        as_int = operator.index(value)
    except TypeError:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}") from None
    if as_int < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return as_int
