"""The training speed-up table: steps and seconds each scheme needs to reach the baseline's final FID.

From the per-checkpoint metric records of the study (one feature extractor): per family (``original`` = the
baseline, trained with train.timesteps / train.loss_weighting, normally uniform; ``speedup.<scheme>``), the mean FID
over seeds at every checkpoint is a curve over steps; the target is the baseline's mean FID at its final checkpoint.
A scheme's steps-to-target is the first step at which its mean curve reaches the target, linearly interpolated between
the two checkpoints that bracket the crossing (the first checkpoint when it is already there; NaN when never). Its
seconds-to-target are the mean training seconds (``train_wall_seconds`` of the records) interpolated at that step.
Speed-ups divide the baseline's own steps / seconds to the target (so the baseline's are 1; when its curve dips under
its final value before the end, that earlier crossing counts) by the scheme's. Intervals: seeds resampled with
replacement within every family (``bootstrap`` times), the table recomputed; 2.5 and 97.5 percentiles over the
resamples whose curves reach the target, and the share that do.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

BASELINE = "original"


def first_crossing(x, y, target: float) -> float:
    """The first x at which the piecewise-linear curve through (x, y) falls to ``target`` or below; NaN if never."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    below = np.flatnonzero(y <= target)
    if below.size == 0:
        return float("nan")
    i = int(below[0])
    if i == 0:
        return float(x[0])
    x0, x1, y0, y1 = x[i - 1], x[i], y[i - 1], y[i]
    return float(x0 + (y0 - target) / (y0 - y1) * (x1 - x0))


def mean_curves(records: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """family -> one row per step: fid_mean, fid_std (over seeds), seconds_mean, n_seeds."""
    out = {}
    for family, sub in records.groupby("family"):
        out[family] = sub.groupby("step").agg(
            fid_mean=("fid", "mean"), fid_std=("fid", "std"), seconds_mean=("train_wall_seconds", "mean"),
            n_seeds=("seed", "nunique")).reset_index().sort_values("step")
    return out


def _to_target(curve: pd.DataFrame, target: float) -> tuple[float, float]:
    step = first_crossing(curve["step"], curve["fid_mean"], target)
    seconds = float(np.interp(step, curve["step"], curve["seconds_mean"])) if np.isfinite(step) else float("nan")
    return step, seconds


def _point_table(records: pd.DataFrame, baseline: str) -> pd.DataFrame:
    curves = mean_curves(records)
    if baseline not in curves:
        raise ValueError(f"speed-up: no records of the baseline family {baseline!r} (families: {', '.join(curves)})")
    target = float(curves[baseline]["fid_mean"].iloc[-1])
    base_steps, base_seconds = _to_target(curves[baseline], target)
    rows = []
    for family, c in curves.items():
        steps, seconds = _to_target(c, target)
        last = c.iloc[-1]
        rows.append({"family": family, "target_fid": target, "steps_to_target": steps, "seconds_to_target": seconds,
                     "speedup_steps": base_steps / steps, "speedup_seconds": base_seconds / seconds,
                     "final_step": int(last["step"]), "final_seconds": float(last["seconds_mean"]),
                     "final_fid_mean": float(last["fid_mean"]), "final_fid_std": float(last["fid_std"]),
                     "n_seeds": int(last["n_seeds"])})
    return pd.DataFrame(rows)


def _resample(records: pd.DataFrame, rng) -> pd.DataFrame:
    parts = []
    for _, sub in records.groupby("family"):
        seeds = sub["seed"].unique()
        for k, s in enumerate(rng.choice(seeds, size=len(seeds), replace=True)):
            parts.append(sub[sub["seed"] == s].assign(seed=k))
    return pd.concat(parts, ignore_index=True)


def speedup_table(records: pd.DataFrame, baseline: str = BASELINE, bootstrap: int = 1000, seed: int = 0) -> pd.DataFrame:
    """One row per family (see the module docstring); records: columns family, seed, step, fid, train_wall_seconds."""
    table = _point_table(records, baseline)
    if bootstrap:
        rng = np.random.default_rng(seed)
        draws = pd.concat([_point_table(_resample(records, rng), baseline) for _ in range(bootstrap)])
        for col in ("speedup_steps", "speedup_seconds"):
            grouped = draws.groupby("family")[col]
            table[f"{col}_lo"] = table["family"].map(grouped.quantile(0.025))
            table[f"{col}_hi"] = table["family"].map(grouped.quantile(0.975))
        table["reach_share"] = table["family"].map(draws.groupby("family")["steps_to_target"].apply(
            lambda s: float(np.isfinite(s).mean())))
    order = [baseline] + sorted(f for f in table["family"] if f != baseline)
    return table.set_index("family").loc[order].reset_index()


def plot_fid_curves(records: pd.DataFrame, x: str, path, baseline: str = BASELINE) -> None:
    """Mean FID over seeds (band: +-1 std) against step or training seconds, one line per family, the target dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = mean_curves(records)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for family, c in curves.items():
        xs = c["step"] if x == "step" else c["seconds_mean"]
        label = "baseline (uniform)" if family == baseline else family.removeprefix("speedup.")
        line, = ax.plot(xs, c["fid_mean"], marker="o", ms=3, label=label, lw=2.2 if family == baseline else 1.4)
        ax.fill_between(xs, c["fid_mean"] - c["fid_std"].fillna(0), c["fid_mean"] + c["fid_std"].fillna(0),
                        color=line.get_color(), alpha=0.12)
    if baseline in curves:
        ax.axhline(curves[baseline]["fid_mean"].iloc[-1], color="k", ls="--", lw=0.8, label="baseline final FID")
    ax.set_xlabel("training step" if x == "step" else "training seconds (mean over seeds)")
    ax.set_ylabel("FID (mean over seeds, band: +-1 std)")
    if (records["fid"] > 0).all() and records["fid"].max() > 10 * records["fid"].min():
        ax.set_yscale("log")
    ax.legend(fontsize=8)
    fig.tight_layout()
    _atomic(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120))
    plt.close(fig)


def _atomic(path, write) -> None:
    """write(tmp) to a temporary name beside ``path``, then rename: never a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    write(tmp)
    os.replace(tmp, path)


def write_csv(table: pd.DataFrame, path) -> None:
    _atomic(path, lambda tmp: table.to_csv(tmp, index=False))
