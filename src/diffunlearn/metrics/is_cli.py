"""``diffunlearn is PATH``: Inception Score of an image folder or samples ``.npz``. No torch import until ``run``."""
from __future__ import annotations

import argparse
import json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", help="image folder (recursive) or .npz of uint8 NHWC samples (key 'images')")
    parser.add_argument("--splits", type=int, default=10)
    parser.add_argument("--inception-weights", default=None, metavar="FILE",
                        help="FID-Inception weights (default: torch hub cache, else download)")
    parser.add_argument("--batch-size", type=int, default=200)
    parser.add_argument("--device", default=None, help="cuda, cuda:0 or cpu (default: cuda if available)")
    parser.add_argument("--json", action="store_true", help="print one JSON record")


def run(args) -> int:
    from diffunlearn.metrics.extract import extract
    from diffunlearn.metrics.images import ImageSource
    from diffunlearn.metrics.inception import load_inception
    from diffunlearn.metrics.inception_score import inception_score

    source = ImageSource(args.path)
    extractor = load_inception(args.inception_weights, args.device)
    out = extract(extractor, source.batches(args.batch_size), args.batch_size, keep_logits=True)
    mean, std = inception_score(out.logits, splits=args.splits)
    if args.json:
        print(json.dumps({"inception_score_mean": mean, "inception_score_std": std, "num_samples": out.count,
                          "splits": args.splits, **extractor.describe()}))
    else:
        print(f"inception_score_mean: {mean}")
        print(f"inception_score_std: {std}")
    return 0
