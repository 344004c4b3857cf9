"""Choice models, preference pairs and win rates of the preference stage (make_preferences, train_dpo, dpo report).

A choice model maps uint8 images [N, H, W, C] to one score each (higher is preferred); offline ones only:

- ``classifier``: the pipeline's classifier (metrics.classifier): the probability of ``dpo.choice_model.label``,
  or its confidence (largest class probability) when the label is null. Identity: its weights' sha256.
- ``function``: a user function ``module:function`` (the module importable in the job). Identity: the path and
  the sha256 of the module's source file.
- ``pairs``: no scoring; a user-supplied .npz with uint8 ``winners`` and ``losers``. Identity: its sha256.
"""
from __future__ import annotations

import importlib
import inspect
import math

import numpy as np

RUN_KEYS = ("beta", "sft", "lr", "steps", "batch_size", "ema_decay", "grad_clip")


def run_settings(dpo_cfg: dict, name: str) -> dict:
    """The hyper-parameters of run ``name``: dpo's beta / sft / lr / steps / batch_size / ema_decay / grad_clip,
    overridden by the run's own entry in dpo.runs."""
    run = next((r for r in dpo_cfg["runs"] if r["name"] == name), None)
    if run is None:
        raise ValueError(f"config error at dpo.runs: no run named {name!r}")
    hp = {k: run.get(k, dpo_cfg[k]) for k in RUN_KEYS}
    if hp["sft"]:
        hp["beta"] = None  # SFT has no beta: changing dpo.beta does not re-plan it
    return hp


def _function_path(spec: str):
    module, sep, func = (spec or "").partition(":")
    if not sep or not module or not func:
        raise ValueError(f"config error at dpo.choice_model.function: expected module:function, got {spec!r}")
    return module, func


def check_dpo_config(config: dict) -> None:
    """One-line errors for dpo.* settings that would fail a job later (run names, seeds, choice model)."""
    import os

    d = config["dpo"]
    names = [r["name"] for r in d["runs"]]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"config error at dpo.runs: duplicate run name {dup[0]!r}")
    if not names:
        return
    for i, s in enumerate(d["seeds"] or []):
        if s not in config["seeds"]:
            raise ValueError(f"config error at dpo.seeds[{i}]: seed {s} is not in seeds {config['seeds']}")
    if config["latents"]["enabled"]:
        raise ValueError("config error at dpo.runs: preference fine-tuning of latent diffusion models is not supported")
    if d["sample_seed"] == config["sampling"]["seed"]:
        raise ValueError(f"config error at dpo.sample_seed: {d['sample_seed']} equals sampling.seed, whose samples are "
                         "the held-out comparison; choose another")
    cm = d["choice_model"]
    if cm["kind"] == "function":
        _function_path(cm["function"])
    if cm["kind"] == "pairs" and not (cm["pairs_file"] and os.path.exists(cm["pairs_file"])):
        raise ValueError(f"config error at dpo.choice_model.pairs_file: file not found: {cm['pairs_file']}")


def classifier_scores(probabilities: np.ndarray, label: int | None) -> np.ndarray:
    """The probability of ``label`` per row, or the largest probability (confidence) when label is None."""
    if label is not None and not 0 <= label < probabilities.shape[1]:
        raise ValueError(f"config error at dpo.choice_model.label: {label} is not a class of the classifier "
                         f"(0..{probabilities.shape[1] - 1})")
    return probabilities.max(axis=1) if label is None else probabilities[:, label]


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def load_choice_model(cm: dict, classifier_dir=None, device="cpu"):
    """(score function uint8 NHWC -> float64 [N], identity dict) of a classifier or function choice model."""
    from diffunlearn.io import sha256_file

    if cm["kind"] == "classifier":
        from diffunlearn.metrics.classifier import ClassifierExtractor

        ex = ClassifierExtractor(classifier_dir, device=device)
        identity = {"kind": "classifier", "name": "classifier", "label": cm["label"], "weights_sha256": ex.weights_sha256}
        return (lambda images: classifier_scores(softmax(ex.features_and_logits(images)[1]), cm["label"])), identity
    if cm["kind"] == "function":
        module, func = _function_path(cm["function"])
        fn = getattr(importlib.import_module(module), func, None)
        if fn is None:
            raise ValueError(f"config error at dpo.choice_model.function: module {module!r} has no {func!r}")
        identity = {"kind": "function", "name": cm["function"], "source_sha256": sha256_file(inspect.getfile(fn))}
        return (lambda images: _checked_scores(fn(images), len(images), cm["function"])), identity
    raise ValueError(f"choice model kind {cm['kind']!r} does not score images")


def _checked_scores(scores, n: int, name: str) -> np.ndarray:
    out = np.asarray(scores, dtype=np.float64).reshape(-1)
    if out.shape != (n,) or not np.all(np.isfinite(out)):
        raise ValueError(f"choice model {name} returned {np.shape(scores)} scores for {n} images (one finite score each expected)")
    return out


def make_pairs(first: np.ndarray, second: np.ndarray, s_first: np.ndarray, s_second: np.ndarray, min_gap: float):
    """Winners and losers of the pairs (first[i], second[i]) by score; ties and gaps below ``min_gap`` dropped.

    Returns (winners, losers, winner_scores, loser_scores, kept indices)."""
    gap = s_first - s_second
    keep = np.flatnonzero((gap != 0) & (np.abs(gap) >= min_gap))
    first_wins = (gap[keep] > 0)[:, None, None, None]
    winners = np.where(first_wins, first[keep], second[keep])
    losers = np.where(first_wins, second[keep], first[keep])
    sw, sl = np.maximum(s_first, s_second)[keep], np.minimum(s_first, s_second)[keep]
    return winners, losers, sw, sl, keep


def read_pairs_file(path, shape) -> tuple[np.ndarray, np.ndarray]:
    """A user pairs file's winners and losers, checked: uint8 [N, *shape], the same N (>= 1)."""
    with np.load(path) as z:
        missing = [k for k in ("winners", "losers") if k not in z.files]
        if missing:
            raise ValueError(f"pairs file {path}: missing array {missing[0]!r} (needs winners and losers)")
        w, lo = z["winners"], z["losers"]
    for name, a in (("winners", w), ("losers", lo)):
        if a.dtype != np.uint8 or a.ndim != 4 or tuple(a.shape[1:]) != tuple(shape):
            raise ValueError(f"pairs file {path}: {name} must be uint8 [N, {', '.join(map(str, shape))}], got "
                             f"{a.dtype} {list(a.shape)}")
    if len(w) != len(lo) or len(w) == 0:
        raise ValueError(f"pairs file {path}: {len(w)} winners and {len(lo)} losers (the same number >= 1 needed)")
    return w, lo


def wilson_interval(wins: float, n: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score interval of a proportion wins / n (ties counted as half a win)."""
    if n == 0:
        return float("nan"), float("nan")
    p = wins / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def win_rate(model_scores: np.ndarray, ref_scores: np.ndarray, interval: str = "wilson", bootstrap: int = 2000,
             seed: int = 0) -> dict:
    """How often the model's sample beats the reference's from the same noise (a tie: half), with a 95 % interval."""
    wins = (model_scores > ref_scores) + 0.5 * (model_scores == ref_scores)
    n = len(wins)
    if n == 0:  # a pairs-file choice model scores nothing
        return {"win_rate": float("nan"), "win_rate_low": float("nan"), "win_rate_high": float("nan"), "n_compared": 0}
    if interval == "wilson":
        low, high = wilson_interval(float(wins.sum()), n)
    else:
        rng = np.random.default_rng(seed)
        means = wins[rng.integers(0, n, size=(bootstrap, n))].mean(axis=1)
        low, high = np.quantile(means, [0.025, 0.975])
    return {"win_rate": float(wins.mean()), "win_rate_low": float(low), "win_rate_high": float(high), "n_compared": n}


def sample_pairs(reference_dir, settings: dict, sampling: dict, diffusion: dict, device="cpu"):
    """2 x num_pairs samples of the reference model (its EMA weights) from the fixed noise of dpo.sample_seed,
    as the pairs (sample 2i, sample 2i + 1)."""
    from diffunlearn.checkpoint import load_ema_unet
    from diffunlearn.models import build_scheduler
    from diffunlearn.sample import sample_images

    unet = load_ema_unet(reference_dir).to(device)
    scheduler = build_scheduler(diffusion, kind=sampling["scheduler"])
    images = sample_images(unet, scheduler, 2 * settings["num_pairs"], num_inference_steps=sampling["num_inference_steps"],
                           seed=settings["sample_seed"], batch_size=sampling["batch_size"], eta=sampling["eta"],
                           device=device)
    return images[0::2], images[1::2]


def final_implicit_accuracy(rows: list[dict], fraction: float = 0.1) -> float | None:
    """Mean implicit accuracy over the last ``fraction`` of the logged steps (None for SFT, which has none)."""
    acc = [r["implicit_accuracy"] for r in rows if r["implicit_accuracy"] is not None]
    if not acc:
        return None
    k = max(1, int(round(len(acc) * fraction)))
    return float(np.mean(acc[-k:]))


def dpo_row(run: str, hp: dict, model_scores, ref_scores, metrics: list[dict], ref_metrics: list[dict],
            logs: list[list[dict]], costs: list[dict], interval: dict) -> dict:
    """One run's row of report/dpo.csv, its seeds pooled: win rate against the reference (same noise per sample)
    with its 95 % interval, mean scores, FID / IS of the model and the reference, final implicit accuracy, cost."""
    model_scores, ref_scores = np.concatenate(model_scores), np.concatenate(ref_scores)
    acc = [a for a in (final_implicit_accuracy(rows) for rows in logs) if a is not None]

    def mean(records, key):
        return float(np.mean([r[key] for r in records]))

    return {"run": run, "method": "sft" if hp["sft"] else "dpo", "beta": None if hp["sft"] else hp["beta"],
            "lr": hp["lr"], "steps": hp["steps"], "batch_size": hp["batch_size"], "seeds": len(metrics),
            **win_rate(model_scores, ref_scores, interval["interval"], interval["bootstrap"]),
            "mean_score": float(np.mean(model_scores)) if len(model_scores) else float("nan"),
            "mean_score_reference": float(np.mean(ref_scores)) if len(ref_scores) else float("nan"),
            "fid": mean(metrics, "fid"), "fid_reference": mean(ref_metrics, "fid"),
            "is": mean(metrics, "is_mean"), "is_reference": mean(ref_metrics, "is_mean"),
            "implicit_accuracy": float(np.mean(acc)) if acc else None,
            "wall_seconds": mean(costs, "wall_seconds"), "examples_seen": mean(costs, "examples_seen")}
