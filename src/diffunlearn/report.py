"""Tables and plots of the report, from the per-checkpoint metric records."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd

from . import naming

METRICS = ["fid", "is_mean", "is_std", "precision", "recall"]


def load_records(paths) -> pd.DataFrame:
    return pd.DataFrame([json.load(open(p)) for p in paths])


def evaluation_table(records: pd.DataFrame) -> pd.DataFrame:
    """Wide table: one row per (model, step); metric columns suffixed by feature extractor."""
    keys = ["model", "family", "seed", "step"]
    base = records.groupby(keys, as_index=False).agg(
        train_wall_seconds=("train_wall_seconds", "first"), num_samples=("num_samples", "first"))
    out = base
    for ext, sub in records.groupby("feature_extractor"):
        cols = sub[keys + METRICS + ["weights_sha256"]].rename(
            columns={m: f"{m}_{ext}" for m in METRICS + ["weights_sha256"]})
        out = out.merge(cols, on=keys, how="left")
    return out.sort_values(["family", "seed", "step"]).reset_index(drop=True)


def best_scores(records: pd.DataFrame) -> pd.DataFrame:
    """Per family and extractor: the step with the lowest mean FID and the one with the highest mean IS."""
    rows = []
    for (family, ext), sub in records.groupby(["family", "feature_extractor"]):
        per_step = sub.groupby("step").agg(
            fid_mean=("fid", "mean"), fid_std=("fid", "std"), is_mean=("is_mean", "mean"),
            is_std_over_seeds=("is_mean", "std"), n_seeds=("seed", "nunique"))
        for criterion, step in (("fid", per_step["fid_mean"].idxmin()), ("is", per_step["is_mean"].idxmax())):
            r = per_step.loc[step]
            rows.append({"family": family, "feature_extractor": ext, "criterion": criterion, "step": int(step),
                         "fid_mean": r.fid_mean, "fid_std": r.fid_std, "is_mean": r.is_mean,
                         "is_std_over_seeds": r.is_std_over_seeds, "n_seeds": int(r.n_seeds)})
    return pd.DataFrame(rows)


# Model kinds drawn on the unlearning panel: they start from a trained original's final checkpoint (dpo: the
# preference fine-tuned originals, at their fine-tuning steps).
UNLEARNING_KINDS = ("unlearn", "pruned", "dpo")
# A metric whose plotted values span more than this factor gets a log axis (an exploding FID keeps the
# other families readable instead of squashing them to the bottom).
LOG_SCALE_SPAN = 10.0


def _kind(model: str) -> str:
    return naming.parse(model).kind


def use_log_scale(values) -> bool:
    """Log axis when every value is positive and the largest is over LOG_SCALE_SPAN times the smallest."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    return bool(v.size and v.min() > 0 and v.max() > LOG_SCALE_SPAN * v.min())


def _per_step(fam: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Mean, min and max over seeds per step."""
    g = fam.groupby("step")[metric]
    return pd.DataFrame({"mean": g.mean(), "lo": g.min(), "hi": g.max()}).sort_index()


def _final(fam: pd.DataFrame, metric: str) -> pd.Series:
    return _per_step(fam, metric).iloc[-1]


def _training_panel(ax, sub: pd.DataFrame, metric: str, colors: dict) -> None:
    for family, fam in sub.groupby("family", sort=False):
        st = _per_step(fam, metric)
        ax.plot(st.index, st["mean"], marker="o", color=colors[family],
                label=f"{family} (n={fam['seed'].nunique()})")
        ax.fill_between(st.index, st["lo"], st["hi"], color=colors[family], alpha=0.2)
    ax.set_xlabel("training step")


def _unlearning_panel(ax, sub: pd.DataFrame, trained: pd.DataFrame, metric: str, colors: dict) -> None:
    """Unlearned families at their own number of unlearning steps, with the trained models' final
    checkpoints as reference lines: the original (where unlearning starts) and the oracles of the forget sets
    unlearned here (the target)."""
    forgotten = {naming.parse(m).forget for m in sub["model"]}
    for family, fam in trained.groupby("family", sort=False):
        name = naming.parse(fam["model"].iloc[0])
        if name.kind == "oracle" and name.forget not in forgotten:
            continue
        ref = _final(fam, metric)
        step = int(fam["step"].max())
        original = name.kind == "original"
        ax.axhline(ref["mean"], color=colors[family], linestyle="-" if original else "--", linewidth=1,
                   label=f"{family} @ step {step} ({'start' if original else 'target'})")
        if original:
            ax.plot([0], [ref["mean"]], marker="s", color=colors[family])
    for family, fam in sub.groupby("family", sort=False):
        st = _per_step(fam, metric)
        err = np.vstack([st["mean"] - st["lo"], st["hi"] - st["mean"]])
        ax.errorbar(st.index, st["mean"], yerr=err, marker="o", linestyle="none", capsize=4, color=colors[family],
                    label=f"{family} (n={fam['seed'].nunique()})")
    ax.set_xlim(left=-0.05 * max(1, sub["step"].max()), right=1.15 * max(1, sub["step"].max()))
    sparsified = any(naming.method(m) == "sparsified" for m in sub["model"])
    ax.set_xlabel("unlearning steps from the original's final checkpoint"
                  + ("\n(sparsified: from the pruned, fine-tuned model)" if sparsified else ""))


def _log_axis(ax) -> None:
    """Log y axis with plain-number labels at 1, 2, 5 x 10^k."""
    from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter

    ax.set_yscale("log")
    ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(ScalarFormatter())
    ax.yaxis.set_minor_formatter(NullFormatter())


def plot_metric_vs_step(records: pd.DataFrame, metric: str, ylabel: str, path) -> None:
    import matplotlib.pyplot as plt

    fig = metric_vs_step_figure(records, metric, ylabel)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def metric_vs_step_figure(records: pd.DataFrame, metric: str, ylabel: str):
    """One row per feature extractor: training curves (original, oracles) on the left; unlearned models on
    the right at their unlearning steps, against the original's and the oracles' final checkpoints. Mean over
    seeds, band / error bar = min..max over seeds. Log axis when one family's values dwarf the others'."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = records["model"].map(_kind)
    unlearned = kinds.isin(UNLEARNING_KINDS)
    families = list(dict.fromkeys(records["family"]))
    palette = plt.get_cmap("tab10" if len(families) <= 10 else "tab20")
    colors = {f: palette(i % palette.N) for i, f in enumerate(families)}
    extractors = sorted(records["feature_extractor"].unique())
    ncols = 2 if unlearned.any() else 1
    fig, axes = plt.subplots(len(extractors), ncols, figsize=(6.5 * ncols, 4.5 * len(extractors)), squeeze=False,
                             sharey="row")
    for row, ext in zip(axes, extractors):
        in_ext = records["feature_extractor"] == ext
        log = use_log_scale(records.loc[in_ext, metric])
        _training_panel(row[0], records[in_ext & ~unlearned], metric, colors)
        row[0].set_title(f"{ylabel} during training ({ext} features)")
        if ncols == 2:
            _unlearning_panel(row[1], records[in_ext & unlearned], records[in_ext & ~unlearned], metric, colors)
            row[1].set_title(f"{ylabel} after unlearning ({ext} features)")
        row[0].set_ylabel(f"{ylabel} [{ext}]" + (" (log scale)" if log else ""))
        for ax in row:
            if log:
                _log_axis(ax)
            else:
                ax.ticklabel_format(axis="y", useOffset=False)  # IS near 1: 1.0001, not "1e-5 + 1.0001"
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


KLOM_COLUMNS = ["method", "forget_set", "split", "n", "reference", "direction", "n_unlearned", "n_oracle",
                "n_floor_oracles"] + [f"{q}_{s}{end}" for q in ("klom", "floor", "excess") for s in ("p95", "mean", "p99")
                                      for end in ("", "_low", "_high")] + [
                "cost_steps", "cost_examples_seen", "cost_wall_seconds", "shared_wall_seconds", "cost_device"]


def klom_table(summary_paths) -> pd.DataFrame:
    """report/klom.csv: one row per method, forget set and split (docs/outputs.md lists the columns)."""
    rows = [r for p in summary_paths for r in json.load(open(p))]
    table = pd.DataFrame(rows)
    return table[[c for c in KLOM_COLUMNS if c in table] + [c for c in table if c not in KLOM_COLUMNS]]


def _interval_bars(ax, xs, table, column, **kwargs):
    """Points with the 95 % interval columns ``<column>_low`` / ``_high`` as error bars."""
    values = table[column].to_numpy(dtype=float)
    low, high = table[f"{column}_low"].to_numpy(dtype=float), table[f"{column}_high"].to_numpy(dtype=float)
    yerr = np.vstack([np.maximum(values - low, 0), np.maximum(high - values, 0)])
    ax.errorbar(xs, values, yerr=yerr, fmt="o", capsize=3, **kwargs)


def plot_klom_per_method(table: pd.DataFrame, path, stat: str = "mean") -> None:
    """Per forget set, each method's excess KLOM (KLOM - floor at the same N) per split, with 95 % intervals."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    forget_sets = list(dict.fromkeys(table["forget_set"]))
    splits = ["forget", "retain", "validation"]
    fig, axes = plt.subplots(1, len(forget_sets), figsize=(6 * len(forget_sets), 4), squeeze=False)
    for ax, fs in zip(axes[0], forget_sets):
        sub = table[table["forget_set"] == fs]
        methods = list(dict.fromkeys(sub["method"]))
        width = 0.8 / len(splits)
        for j, split in enumerate(splits):
            rows = sub[sub.split == split].set_index("method").reindex(methods)
            _interval_bars(ax, np.arange(len(methods)) + (j - 1) * width, rows, f"excess_{stat}", label=split)
        ax.axhline(0.0, color="k", linestyle="--", linewidth=0.8)
        ax.set_xticks(np.arange(len(methods)))
        ax.set_xticklabels(methods, rotation=30, ha="right")
        ax.set_ylabel(f"excess KLOM, {stat} over examples (nats)")
        ax.set_title(f"forget set {fs}: KLOM - floor at the same N (95 % intervals over models)", fontsize=9)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_cost_vs_klom(table: pd.DataFrame, path) -> None:
    """Compute per unlearned model against the forget split's mean excess KLOM, with its 95 % interval."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sub = table[table["split"] == "forget"]
    fig, ax = plt.subplots(figsize=(6, 4))
    for method, g in sub.groupby("method", sort=False):
        _interval_bars(ax, g["cost_wall_seconds"] + g["shared_wall_seconds"], g, "excess_mean", label=method)
    ax.axhline(0.0, color="k", linestyle="--", linewidth=0.8)
    ax.set_xlabel("wall seconds per unlearned model (incl. shared pruning)")
    ax.set_ylabel("forget-split mean excess KLOM (nats)")
    ax.set_title("cost vs excess KLOM (0: as good as retraining, at this N)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
