"""``diffunlearn fid PATH1 PATH2``: FID in pytorch-fid's command-line shape.

A PATH is a folder of images (recursive), an ``.npz`` of uint8 NHWC samples (key ``images``), or an
``.npz`` of statistics (``mu``, ``sigma``; pytorch-fid's format). ``--save-stats PATH OUT.npz``
writes PATH's statistics instead. No torch import until ``run``.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", nargs=2, help="two image folders, samples .npz or stats .npz "
                                              "(with --save-stats: input PATH and output .npz)")
    parser.add_argument("--inception-weights", default=None, metavar="FILE",
                        help="FID-Inception weights (default: torch hub cache, else download)")
    parser.add_argument("--batch-size", type=int, default=200)
    parser.add_argument("--device", default=None, help="cuda, cuda:0 or cpu (default: cuda if available)")
    parser.add_argument("--save-stats", action="store_true",
                        help="write the first PATH's statistics to the second (pytorch-fid-compatible .npz)")
    parser.add_argument("--json", action="store_true", help="print one JSON record instead of 'FID: value'")


def path_stats(path: str, get_extractor, batch_size: int) -> tuple:
    """(mu, sigma, count or None) of a stats file, samples file or image folder."""
    from diffunlearn.metrics.extract import extract
    from diffunlearn.metrics.fid import is_stats_file, load_stats
    from diffunlearn.metrics.images import ImageSource

    if is_stats_file(path):
        mu, sigma = load_stats(path)
        return mu, sigma, None
    source = ImageSource(path)
    out = extract(get_extractor(), source.batches(batch_size), batch_size)
    return out.mu, out.sigma, out.count


def lazy_extractor(args):
    cache = {}

    def get():
        if "x" not in cache:
            from diffunlearn.metrics.inception import load_inception

            cache["x"] = load_inception(args.inception_weights, args.device)
        return cache["x"]

    return get, cache


def run(args) -> int:
    from diffunlearn.metrics.fid import frechet_distance, save_stats

    for p in (args.path if not args.save_stats else args.path[:1]):
        if not Path(p).exists():
            raise FileNotFoundError(f"Invalid path: {p}")
    get_extractor, cache = lazy_extractor(args)
    if args.save_stats:
        src, out = args.path
        if Path(out).exists():
            raise ValueError(f"Existing output file: {out}")
        mu, sigma, count = path_stats(src, get_extractor, args.batch_size)
        extra = {"num_samples": count} if count is not None else {}
        if "x" in cache:
            extra["weights_sha256"] = cache["x"].weights_sha256
        save_stats(out, mu, sigma, **extra)
        print(f"Saved statistics of {src} to {out}")
        return 0
    (mu1, s1, n1), (mu2, s2, n2) = (path_stats(p, get_extractor, args.batch_size) for p in args.path)
    fid = frechet_distance(mu1, s1, mu2, s2)
    if args.json:
        record = {"fid": fid, "num_samples": [n1, n2], "paths": list(args.path)}
        if "x" in cache:
            record.update(cache["x"].describe())
        print(json.dumps(record))
    else:
        print("FID: ", fid)
    return 0
