"""Tables and plots of the report, from the per-checkpoint metric records."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd

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


def plot_metric_vs_step(records: pd.DataFrame, metric: str, ylabel: str, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    extractors = sorted(records["feature_extractor"].unique())
    fig, axes = plt.subplots(1, len(extractors), figsize=(6 * len(extractors), 4), squeeze=False)
    for ax, ext in zip(axes[0], extractors):
        sub = records[records["feature_extractor"] == ext]
        for family, fam in sub.groupby("family"):
            g = fam.groupby("step")[metric]
            steps = np.array(sorted(fam["step"].unique()))
            mean, lo, hi = g.mean().loc[steps], g.min().loc[steps], g.max().loc[steps]
            ax.plot(steps, mean, marker="o", label=f"{family} (n={fam['seed'].nunique()})")
            ax.fill_between(steps, lo, hi, alpha=0.2)
        ax.set_xlabel("training step")
        ax.set_ylabel(f"{ylabel} [{ext}]")
        ax.set_title(f"{ylabel} vs step ({ext} features)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


KLOM_COLUMNS = ["method", "forget_set", "split", "n", "p95", "mean", "p99", "floor_p95", "floor_mean", "floor_p99",
                "n_unlearned", "n_oracle", "cost_steps", "cost_examples_seen", "cost_wall_seconds", "shared_wall_seconds",
                "cost_device"]


def klom_table(summary_paths) -> pd.DataFrame:
    rows = [r for p in summary_paths for r in json.load(open(p))]
    table = pd.DataFrame(rows)
    return table[[c for c in KLOM_COLUMNS if c in table] + [c for c in table if c not in KLOM_COLUMNS]]


def plot_klom_per_method(table: pd.DataFrame, path) -> None:
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
            vals = [sub[(sub.method == m) & (sub.split == split)]["p95"].mean() for m in methods]
            xs = np.arange(len(methods)) + (j - 1) * width
            ax.bar(xs, vals, width, label=split)
            floor = sub[sub.split == split]["floor_p95"].mean()
            ax.hlines(floor, xs.min() - width / 2, xs.max() + width / 2, colors="k", linestyles="--", linewidth=0.8)
        ax.set_xticks(np.arange(len(methods)))
        ax.set_xticklabels(methods, rotation=30, ha="right")
        ax.set_ylabel("KLOM P95 (nats)")
        ax.set_title(f"forget set {fs} (dashed: oracle floor)")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_cost_vs_klom(table: pd.DataFrame, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sub = table[table["split"] == "forget"]
    fig, ax = plt.subplots(figsize=(6, 4))
    for method, g in sub.groupby("method"):
        ax.scatter(g["cost_wall_seconds"] + g["shared_wall_seconds"], g["p95"], label=method, s=40)
    ax.set_xlabel("wall seconds per unlearned model (incl. shared pruning)")
    ax.set_ylabel("forget-split KLOM P95 (nats)")
    ax.set_title("cost vs KLOM")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
