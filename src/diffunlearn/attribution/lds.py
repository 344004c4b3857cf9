"""Linear datamodeling score (LDS): how well attribution scores rank held-out subsets.

LDS is the Spearman correlation, over held-out subsets (datamodel distribution, alpha = 0.5),
between the behaviour the scores predict (``predict_behaviour``) and the behaviour measured on
models actually trained on those subsets. It is computed once per training seed; the interval
over seeds is Student-t based.
"""
from __future__ import annotations

import numpy as np
from scipy import stats

from .estimators import predict_behaviour


def lds(predicted, actual) -> float:
    """Spearman rank correlation between predicted and actual behaviour; NaN if either is constant."""
    predicted = np.asarray(predicted, dtype=float)
    actual = np.asarray(actual, dtype=float)
    if predicted.ndim != 1 or predicted.shape != actual.shape:
        raise ValueError(f"predicted and actual must be 1-D of equal length, got {predicted.shape} and {actual.shape}")
    if predicted.size < 2:
        raise ValueError(f"lds needs at least 2 subsets, got {predicted.size}")
    if np.ptp(predicted) == 0 or np.ptp(actual) == 0:
        return float("nan")
    return float(stats.spearmanr(predicted, actual).statistic)


def lds_with_ci(scores, heldout_masks, heldout_values_by_seed, intercept: float = 0.0,
                confidence: float = 0.95) -> dict:
    """LDS per training seed and its mean with a Student-t confidence interval over seeds.

    heldout_values_by_seed: [S, M], the measured behaviour of the model trained with seed s on
    held-out subset m (a 1-D [M] array counts as one seed). Returns
    {"mean", "low", "high", "per_seed" (list of S floats), "num_seeds"}; with one seed the
    interval is undefined and low = high = NaN.
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    values_by_seed = np.atleast_2d(np.asarray(heldout_values_by_seed, dtype=float))
    if values_by_seed.ndim != 2:
        raise ValueError(f"heldout_values_by_seed must be [S, M], got shape {values_by_seed.shape}")
    predicted = predict_behaviour(scores, heldout_masks, intercept)
    if values_by_seed.shape[1] != predicted.shape[0]:
        raise ValueError(
            f"heldout_values_by_seed has {values_by_seed.shape[1]} subsets per seed but heldout_masks has "
            f"{predicted.shape[0]}"
        )
    per_seed = np.array([lds(predicted, actual) for actual in values_by_seed])
    mean = float(per_seed.mean())
    num_seeds = len(per_seed)
    if num_seeds < 2:
        low = high = float("nan")
    else:
        half_width = stats.t.ppf(0.5 + confidence / 2, df=num_seeds - 1) * per_seed.std(ddof=1) / np.sqrt(num_seeds)
        low, high = float(mean - half_width), float(mean + half_width)
    return {"mean": mean, "low": low, "high": high, "per_seed": per_seed.tolist(), "num_seeds": num_seeds}


def lds_curve(estimator_fn, masks, values, heldout_masks, heldout_values_by_seed, sizes,
              confidence: float = 0.95) -> list[dict]:
    """LDS as a function of the number of subsets used to fit the scores.

    For each k in ``sizes``, the scores are ``estimator_fn(masks[:k], values[:k])``, which returns
    either scores [n] or a tuple (scores, intercept, ...) such as ``datamodel_ridge``'s; for
    Shapley, bind the endpoints: ``lambda m, v: shapley_regression(m, v, v_empty, v_full)``.
    Returns one ``lds_with_ci`` dict per size, with "num_subsets": k added.
    """
    masks = np.asarray(masks)
    values = np.asarray(values, dtype=float)
    curve = []
    for k in sizes:
        k = int(k)
        if not 1 <= k <= len(masks):
            raise ValueError(f"size {k} is outside 1..{len(masks)} (the number of subsets given)")
        fitted = estimator_fn(masks[:k], values[:k])
        if isinstance(fitted, tuple):
            scores, intercept = fitted[0], (fitted[1] if len(fitted) > 1 else 0.0)
        else:
            scores, intercept = fitted, 0.0
        point = lds_with_ci(scores, heldout_masks, heldout_values_by_seed, intercept, confidence)
        curve.append({"num_subsets": k, **point})
    return curve


def _row_pearson(x, y):
    """Pearson correlation of each row of x [B, M] with each row of y [S, M]: [B, S] (NaN for constant rows)."""
    xc = x - x.mean(axis=-1, keepdims=True)
    yc = y - y.mean(axis=-1, keepdims=True)
    denom = np.sqrt((xc ** 2).sum(-1))[:, None] * np.sqrt((yc ** 2).sum(-1))[None, :]
    with np.errstate(invalid="ignore", divide="ignore"):
        return (xc @ yc.T) / denom


def _paired_pearson(x, y):
    """Pearson correlation of row b of x with row b of y, for every b: [B] (NaN for constant rows)."""
    xc = x - x.mean(axis=-1, keepdims=True)
    yc = y - y.mean(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (xc * yc).sum(-1) / np.sqrt((xc ** 2).sum(-1) * (yc ** 2).sum(-1))


def seed_ceiling(values_by_seed) -> float:
    """The mean Spearman correlation of the held-out behaviours between pairs of training seeds: how well one
    seed's models predict another's, the most a predictor of the behaviour can be expected to reach (NaN with one
    seed)."""
    values_by_seed = np.atleast_2d(np.asarray(values_by_seed, dtype=float))
    s = len(values_by_seed)
    pairs = [lds(values_by_seed[i], values_by_seed[j]) for i in range(s) for j in range(i + 1, s)]
    return float(np.nanmean(pairs)) if pairs and not np.all(np.isnan(pairs)) else float("nan")


def lds_null_and_bootstrap(predicted, values_by_seed, num_draws: int = 1000, seed: int = 0,
                           confidence: float = 0.95) -> dict:
    """The seed-mean LDS beside (a) its permutation null: the seed-mean LDS of the predictions shuffled over the
    held-out subsets, ``num_draws`` times, and its 95th percentile; (b) a percentile bootstrap interval over
    the held-out subsets (resampled with replacement, all seeds together)."""
    from scipy.stats import rankdata

    predicted = np.asarray(predicted, dtype=float)
    values_by_seed = np.atleast_2d(np.asarray(values_by_seed, dtype=float))
    rng = np.random.default_rng(seed)
    m = len(predicted)
    ranks_actual = rankdata(values_by_seed, axis=1)
    perms = np.argsort(rng.random((num_draws, m)), axis=1)
    null = np.nanmean(_row_pearson(rankdata(predicted)[perms], ranks_actual), axis=1)
    picks = rng.integers(0, m, size=(num_draws, m))
    boot_pred = rankdata(predicted[picks], axis=1)
    boot = np.nanmean([_paired_pearson(boot_pred, rankdata(v[picks], axis=1)) for v in values_by_seed], axis=0)
    tail = (1 - confidence) / 2
    finite = boot[np.isfinite(boot)]
    low, high = (np.quantile(finite, [tail, 1 - tail]) if len(finite) else (np.nan, np.nan))
    return {"null_p95": float(np.nanquantile(null, 0.95)), "boot_low": float(low), "boot_high": float(high),
            "num_heldout": m}
