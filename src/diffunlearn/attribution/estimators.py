"""Attribution scores from (keep-mask, behaviour) pairs.

masks: bool [M, n] (True = unit kept in the model's training set); values: float [M], the
measured behaviour (FID, IS, mean margin, ...) of the model trained or unlearned on each subset.
Every estimator returns one score per unit; ``predict_behaviour`` turns scores back into
predicted behaviour of any subset (the linear datamodel).
"""
from __future__ import annotations

import numpy as np

DEFAULT_RIDGE_ALPHAS = np.logspace(-3, 4, 15)


def shapley_regression(masks, values, v_empty: float, v_full: float) -> np.ndarray:
    """Shapley values by constrained linear regression (KernelSHAP, Covert & Lee 2021).

    Solves  min_phi  mean_rows (values - v_empty - masks @ phi)^2  s.t.  sum(phi) = v_full - v_empty
    through its KKT system  [[A, 1], [1^T, 0]] [phi; lam] = [b; v_full - v_empty]  with
    A = masks^T masks / M and b = masks^T (values - v_empty) / M. Rows are weighted uniformly:
    the Shapley kernel is expected to be in the sampling (``draw_subsets("datashapley", ...)``).
    Empty and full coalitions carry no information beyond v_empty / v_full and are dropped.
    """
    masks, values = _checked_masks_and_values(masks, values)
    v_empty, v_full = float(v_empty), float(v_full)
    if not (np.isfinite(v_empty) and np.isfinite(v_full)):
        raise ValueError(f"v_empty and v_full must be finite, got {v_empty!r}, {v_full!r}")
    n = masks.shape[1]
    proper = masks.any(axis=1) & ~masks.all(axis=1)
    if not proper.any():
        raise ValueError("shapley_regression needs at least one subset that is neither empty nor full")
    Z = masks[proper].astype(float)
    y = values[proper] - v_empty

    A = Z.T @ Z / len(Z)
    b = Z.T @ y / len(Z)
    kkt = np.zeros((n + 1, n + 1))
    kkt[:n, :n] = A
    kkt[:n, n] = 1.0
    kkt[n, :n] = 1.0
    rhs = np.append(b, v_full - v_empty)
    # The KKT system of this equality-constrained least squares is always consistent, so lstsq
    # returns an exact solution; with too few distinct subsets (A singular on the constraint
    # plane) it is the minimum-norm one instead of a LinAlgError.
    solution = np.linalg.lstsq(kkt, rhs, rcond=None)[0]
    return solution[:n]


def datamodel_ridge(masks, values, alphas=None, cv=5) -> tuple[np.ndarray, float, float]:
    """Linear datamodel by ridge regression with an intercept, penalty chosen by K-fold CV.

    Returns (scores [n], intercept, chosen_alpha). ``cv`` is passed to sklearn's RidgeCV
    (an int is unshuffled K-fold, fine for i.i.d. subsets; None is efficient leave-one-out).
    On fixed-size subsets (the datamodel distribution) every row keeps the same number of units,
    so scores are identified only up to a common shift, which the intercept absorbs; rankings
    and LDS are unaffected.
    """
    # imported here so that drawing subsets does not pay for importing sklearn
    from sklearn.linear_model import RidgeCV

    masks, values = _checked_masks_and_values(masks, values)
    alphas = DEFAULT_RIDGE_ALPHAS if alphas is None else np.atleast_1d(np.asarray(alphas, dtype=float))
    if alphas.size == 0 or not np.all(alphas > 0):
        raise ValueError(f"ridge alphas must be positive, got {alphas!r}")
    model = RidgeCV(alphas=alphas, cv=cv, fit_intercept=True).fit(masks.astype(float), values)
    return np.asarray(model.coef_, dtype=float), float(model.intercept_), float(model.alpha_)


def banzhaf(masks, values) -> np.ndarray:
    """Banzhaf values by difference of means: mean behaviour with the unit kept minus without.

    Raises ValueError naming the units that are never kept or never removed.
    """
    masks, values = _checked_masks_and_values(masks, values)
    n_kept = masks.sum(axis=0)
    n_removed = len(masks) - n_kept
    uncovered = np.flatnonzero((n_kept == 0) | (n_removed == 0))
    if uncovered.size:
        raise ValueError(
            f"banzhaf needs every unit both kept and removed in some subset; units {uncovered[:20].tolist()}"
            f"{' ...' if uncovered.size > 20 else ''} are not"
        )
    sum_kept = masks.T.astype(float) @ values
    sum_removed = values.sum() - sum_kept
    return sum_kept / n_kept - sum_removed / n_removed


def leave_one_out(values_without_unit, v_full: float) -> np.ndarray:
    """Leave-one-out scores: v_full - v(all units but i), for each unit i."""
    values_without_unit = np.asarray(values_without_unit, dtype=float)
    if values_without_unit.ndim != 1:
        raise ValueError(f"values_without_unit must be 1-D [n_units], got shape {values_without_unit.shape}")
    return float(v_full) - values_without_unit


def predict_behaviour(scores, masks, intercept: float = 0.0) -> np.ndarray:
    """Predicted behaviour of each subset under the linear model: masks @ scores + intercept."""
    scores = np.asarray(scores, dtype=float)
    masks = np.asarray(masks)
    if scores.ndim != 1 or masks.shape[-1] != scores.shape[0]:
        raise ValueError(f"masks of shape {masks.shape} do not match scores of shape {scores.shape}")
    return masks.astype(float) @ scores + float(intercept)


def _checked_masks_and_values(masks, values) -> tuple[np.ndarray, np.ndarray]:
    masks = np.asarray(masks)
    values = np.asarray(values, dtype=float)
    if masks.ndim != 2:
        raise ValueError(f"masks must be 2-D [num_subsets, n_units], got shape {masks.shape}")
    if masks.dtype != bool:
        if not np.isin(masks, (0, 1)).all():
            raise ValueError("masks must be boolean (or 0/1)")
        masks = masks.astype(bool)
    if values.shape != (masks.shape[0],):
        raise ValueError(f"values must have shape ({masks.shape[0]},) to match masks, got {values.shape}")
    if not np.all(np.isfinite(values)):
        raise ValueError(f"values contain {np.count_nonzero(~np.isfinite(values))} non-finite entries")
    return masks, values
