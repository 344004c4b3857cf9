"""The attribution experiment: units, behaviours of trained models, scores per estimator, LDS tables."""
from __future__ import annotations

import numpy as np

from diffunlearn.attribution.estimators import (
    banzhaf,
    datamodel_ridge,
    leave_one_out,
    predict_behaviour,
    shapley_regression,
)
from diffunlearn.attribution.lds import lds_null_and_bootstrap, lds_with_ci, seed_ceiling

# Behaviours where larger is better are credited as they are; FID is negated so that a positive
# score always means "this unit helps".
# diversity: the entropy (nats) of the classifier's predicted classes over a model's samples; margin: the mean
# margin on the validation split, i.e. the mean denoising loss negated.
BEHAVIOUR_SIGN = {"fid": -1.0, "is": 1.0, "precision": 1.0, "recall": 1.0, "margin": 1.0, "diversity": 1.0}


def units_of(unit: str, train_labels: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """(unit index of every training example, unit names)."""
    if unit == "class":
        classes = np.unique(train_labels)
        return np.searchsorted(classes, train_labels), [f"class {c}" for c in classes]
    if unit == "example":
        return np.arange(len(train_labels)), [f"example {i}" for i in range(len(train_labels))]
    raise ValueError(f"attribution.unit {unit!r}: expected 'class' or 'example'")


def behaviour_value(name: str, metric: dict | None, margins: np.ndarray | None, n_train: int) -> float:
    """A model's scalar behaviour, signed so that larger is better."""
    if name == "margin":
        return float(np.mean(margins[n_train:])) if len(margins) > n_train else float(np.mean(margins))
    key = {"fid": "fid", "is": "is_mean", "precision": "precision", "recall": "recall", "diversity": "class_entropy"}[name]
    if key not in metric:
        raise ValueError(f"attribution.behaviours: {name} needs {key!r} in the metrics record (re-run evaluate)")
    return BEHAVIOUR_SIGN[name] * float(metric[key])


def estimate(estimator: str, masks: np.ndarray, values: np.ndarray, v_empty: float, v_full: float):
    """(scores [n_units], intercept) of one estimator; raises ValueError when the draws do not allow it."""
    if estimator == "shapley":
        return shapley_regression(masks, values, v_empty, v_full), v_empty
    if estimator == "datamodel":
        scores, intercept, _ = datamodel_ridge(masks, values, cv=min(5, len(values)))
        return scores, intercept
    if estimator == "banzhaf":
        return banzhaf(masks, values), float(np.mean(values))
    if estimator == "loo":
        if not (masks.sum(axis=1) == masks.shape[1] - 1).all():
            raise ValueError("the loo estimator needs attribution.removal: loo")
        removed = np.argmin(masks, axis=1)  # the one unit each row leaves out
        values_without = np.full(masks.shape[1], np.nan)
        values_without[removed] = values
        return leave_one_out(values_without, v_full), v_full
    raise ValueError(f"unknown estimator {estimator!r}")


def lds_sizes(num_subsets: int, sizes: list[int] | None) -> list[int]:
    if sizes:
        return sorted({min(s, num_subsets) for s in sizes})
    return sorted({max(3, int(round(num_subsets * f))) for f in (0.25, 0.5, 0.75, 1.0)} & set(range(1, num_subsets + 1)))


def lds_rows(estimator: str, masks, values, v_empty, v_full, heldout_masks, heldout_values_by_seed, sizes,
             seed: int = 0, num_draws: int = 1000) -> list[dict]:
    """Per size k, the LDS of the scores fitted on the first k draws: per-seed mean with its t interval over
    seeds (``lds_with_ci``), a bootstrap interval over the held-out subsets and the 95th percentile of the
    permutation null (``lds_null_and_bootstrap``), and the seed-to-seed ceiling (``seed_ceiling``)."""
    ceiling = seed_ceiling(heldout_values_by_seed)
    rows = []
    for k in sizes:
        if not 1 <= k <= len(masks):
            raise ValueError(f"size {k} is outside 1..{len(masks)} (the number of subsets given)")
        scores, intercept = estimate(estimator, masks[:k], values[:k], v_empty, v_full)
        point = lds_with_ci(scores, heldout_masks, heldout_values_by_seed, intercept)
        predicted = predict_behaviour(scores, heldout_masks, intercept)
        null = lds_null_and_bootstrap(predicted, heldout_values_by_seed, num_draws, seed)
        rows.append({"num_subsets": int(k), **point, **null, "ceiling": ceiling})
    return rows


def plot_lds(table, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    behaviours = list(dict.fromkeys(table["behaviour"]))
    fig, axes = plt.subplots(1, len(behaviours), figsize=(5.5 * len(behaviours), 4), squeeze=False)
    for ax, b in zip(axes[0], behaviours):
        sub = table[table["behaviour"] == b]
        for (method, est), g in sub.groupby(["method", "estimator"]):
            g = g.sort_values("num_subsets")
            ax.plot(g["num_subsets"], g["lds_mean"], marker="o", label=f"{est} / {method}",
                    linestyle="-" if method == "retrain" else "--")
            ax.fill_between(g["num_subsets"], g["lds_low"], g["lds_high"], alpha=0.15)
        ax.set_xlabel("subsets used for estimation")
        ax.set_ylabel("LDS (Spearman)")
        ax.set_title(f"LDS vs number of subsets: {b}")
        ax.axhline(0, color="k", linewidth=0.5)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_top_bottom(scores_table, images, unit_of_example, unit_names, path, k: int = 3, per_unit: int = 8) -> None:
    """Example images of the k highest- and k lowest-credited units, per (behaviour, estimator) of the first method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    first_method = scores_table["method"].iloc[0]
    sub = scores_table[scores_table["method"] == first_method]
    panels = list(sub.groupby(["behaviour", "estimator"]))
    fig, axes = plt.subplots(len(panels), 2, figsize=(2 * per_unit * 0.5 + 2, 1.1 * k * len(panels) + 0.5), squeeze=False)
    for row, ((behaviour, est), g) in enumerate(panels):
        order = g.sort_values("score", ascending=False)["unit_index"].to_numpy()
        for col, (title, chosen) in enumerate((("top", order[:k]), ("bottom", order[::-1][:k]))):
            strips = []
            for u in chosen:
                members = np.flatnonzero(unit_of_example == u)[:per_unit]
                tiles = [images[i] for i in members] + [np.zeros_like(images[0])] * (per_unit - len(members))
                strips.append(np.concatenate(tiles, axis=1))
            picture = np.concatenate(strips, axis=0)
            ax = axes[row, col]
            ax.imshow(picture.squeeze(-1) if picture.shape[-1] == 1 else picture, cmap="gray")
            ax.set_yticks([(i + 0.5) * images.shape[1] for i in range(len(chosen))])
            ax.set_yticklabels([unit_names[u] for u in chosen], fontsize=7)
            ax.set_xticks([])
            ax.set_title(f"{title} {k}: {behaviour}, {est} ({first_method})", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
