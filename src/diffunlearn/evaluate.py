"""Scores of a set of samples against a data set's reference statistics (FID, IS, precision / recall)."""
from __future__ import annotations

import numpy as np

# At most this many reference features are kept for precision / recall (the Frechet statistics use all).
PR_REFERENCE_CAP = 10_000


def load_extractor(name: str, *, classifier_dir=None, inception_weights=None, device="cpu"):
    if name == "classifier":
        from diffunlearn.metrics.classifier import ClassifierExtractor

        return ClassifierExtractor(classifier_dir, device=device)
    if name == "inception":
        from diffunlearn.metrics.inception import load_inception

        return load_inception(inception_weights, device=device)
    raise ValueError(f"unknown feature extractor {name!r} (metrics.feature_extractors: classifier, inception)")


def reference_statistics(extractor, images: np.ndarray, batch_size: int, seed: int = 0) -> dict:
    """Streaming mean / covariance of all reference images plus a capped, seeded subset of features."""
    from diffunlearn.metrics.fid import RunningStats

    keep = np.sort(np.random.default_rng(seed).permutation(len(images))[:PR_REFERENCE_CAP])
    keep_mask = np.zeros(len(images), dtype=bool)
    keep_mask[keep] = True
    stats, kept, pos = None, [], 0
    for feats, _ in extractor.iter_features_and_logits(images, batch_size):
        feats = np.asarray(feats, dtype=np.float64)
        stats = stats or RunningStats(feats.shape[1])
        stats.update(feats)
        kept.append(feats[keep_mask[pos : pos + len(feats)]].astype(np.float32))
        pos += len(feats)
    return {"mu": stats.mean(), "sigma": stats.cov(), "features": np.concatenate(kept), "count": np.int64(stats.count)}


def score_samples(extractor, samples: np.ndarray, reference: dict, *, batch_size: int, is_splits: int, pr_k: int) -> dict:
    from diffunlearn.metrics.fid import RunningStats, frechet_distance
    from diffunlearn.metrics.inception_score import inception_score
    from diffunlearn.metrics.precision_recall import precision_recall

    feats, logits = extractor.features_and_logits(samples, batch_size)
    stats = RunningStats(feats.shape[1])
    stats.update(feats)
    fid = frechet_distance(stats.mean(), stats.cov(), reference["mu"], reference["sigma"])
    is_mean, is_std = inception_score(logits, splits=min(is_splits, len(samples)))
    ref_feats = np.asarray(reference["features"], dtype=np.float64)[: len(samples)]
    precision, recall = precision_recall(ref_feats, feats, k=pr_k)
    counts = np.bincount(np.asarray(logits).argmax(axis=1), minlength=np.asarray(logits).shape[1])
    freq = counts[counts > 0] / counts.sum()
    return {"fid": float(fid), "is_mean": float(is_mean), "is_std": float(is_std),
            "class_entropy": float(-(freq * np.log(freq)).sum()),  # diversity: entropy of the predicted classes
            "precision": float(precision), "recall": float(recall), "num_samples": int(len(samples)),
            "num_reference": int(reference["count"]), "num_reference_pr": int(len(ref_feats))}
