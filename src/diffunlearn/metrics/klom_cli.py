"""``python -m diffunlearn klom UNLEARNED.npy ORACLE.npy [--floor-oracles ORACLE2.npy] [--split-file F] [--json]``.

For people who already have margins: prints, per split, KLOM, its floor at the same N and the excess
(KLOM - floor), each as P95 / mean / P99 over the split's examples, with 95 % intervals over models
(docs/design.md, KLOM). With ``--floor-oracles`` the floor compares those oracles with ORACLE.npy
(the ``extra`` reference); without, the seed indices are split into halves A / B and U_A vs O_B is
read beside O_A vs O_B (the ``split`` reference; rows of UNLEARNED.npy and ORACLE.npy pair by seed).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from diffunlearn.metrics.klom import DIRECTIONS, QUANTITIES, check_klom_sides, klom_with_floor


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("unlearned", help="UNLEARNED.npy: margins of the unlearned models, float [models, examples]")
    parser.add_argument("oracle", help="ORACLE.npy: margins of the oracle (retrained) models, float [models, examples]")
    parser.add_argument(
        "--floor-oracles",
        help="ORACLE2.npy: margins of a second, independent set of oracles; the floor is KLOM(ORACLE2 vs ORACLE) "
        "(default: the split reference on UNLEARNED.npy and ORACLE.npy)",
    )
    parser.add_argument(
        "--split-file",
        help='JSON object {"forget": [indices], "retain": [...], ...} or .npz with one integer array per split '
        '(default: one split "all")',
    )
    parser.add_argument("--bins", type=int, default=20, help="histogram bins per example (default: 20)")
    parser.add_argument("--direction", choices=DIRECTIONS, default="unlearned_oracle",
                        help="KL(unlearned || oracle) (default) or KL(oracle || unlearned)")
    parser.add_argument("--num-splits", type=int, default=10, help="split reference: random A/B halvings averaged (default: 10)")
    parser.add_argument("--bootstrap", type=int, default=100, help="redraws of the models for the intervals (default: 100)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the halvings and of the bootstrap")
    parser.add_argument("--json", action="store_true", help="print one JSON object {split: {klom, floor, excess}}")


def run(args: argparse.Namespace) -> int:
    for name in ("bins", "num_splits"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be a positive integer, got {getattr(args, name)}")
    if args.bootstrap < 0:
        raise ValueError(f"--bootstrap must be 0 or more, got {args.bootstrap}")
    paths = [args.unlearned, args.oracle] + ([args.floor_oracles] if args.floor_oracles else [])
    arrays = [load_margins(path) for path in paths]
    for path, array in zip(paths[1:], arrays[1:]):
        if array.shape[1] != arrays[0].shape[1]:
            raise ValueError(f"{args.unlearned} has {arrays[0].shape[1]} examples but {path} has {array.shape[1]}")
    n_examples = arrays[0].shape[1]
    n_floor = len(arrays[2]) if len(arrays) == 3 else None
    check_klom_sides(len(arrays[0]), len(arrays[1]), n_floor, names=(*paths, "floor oracles")[:3])
    splits = load_splits(args.split_file, n_examples) if args.split_file else {"all": np.arange(n_examples)}
    summary, _, _ = klom_with_floor(
        arrays[0], arrays[1], splits, arrays[2] if len(arrays) == 3 else None, num_splits=args.num_splits,
        direction=args.direction, bootstrap=args.bootstrap, rng_seed=args.seed, bins=args.bins,
    )
    if args.json:
        print(json.dumps({name: {q: entry[q] for q in QUANTITIES} for name, entry in summary.items()}))
        return 0
    reference = f"floor: {paths[2]} vs {paths[1]}" if len(arrays) == 3 else f"floor: split reference, {args.num_splits} halvings"
    print(
        f"KLOM (nats, {args.direction.replace('_', ' || ')}): {len(arrays[0])} unlearned vs {len(arrays[1])} oracle "
        f"models, {n_examples} examples, {args.bins} bins; {reference}; 95 % intervals from {args.bootstrap} redraws"
    )
    print(format_table(summary))
    return 0


def load_margins(path: str | Path) -> np.ndarray:
    """A [models, examples] float array from a .npy file (memory-mapped)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"margins file not found: {path}")
    with path.open("rb") as handle:
        if handle.read(6) != b"\x93NUMPY":
            raise ValueError(f"{path}: not a .npy file")
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise ValueError(f"{path}: unreadable .npy file ({exc})") from None
    if array.ndim != 2:
        raise ValueError(f"{path}: expected a 2-D array [models, examples], got shape {array.shape}")
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        raise ValueError(f"{path}: expected a numeric array, got dtype {array.dtype}")
    if array.shape[0] == 0:
        raise ValueError(f"{path}: has no models (shape {array.shape})")
    if np.issubdtype(array.dtype, np.floating):
        bad = np.isnan(array)
        if bad.any():
            model, example = (int(i) for i in np.argwhere(bad)[0])
            raise ValueError(f"{path}: contains NaN (first at model {model}, example {example})")
    return array


def load_splits(path: str | Path, n_examples: int) -> dict[str, np.ndarray]:
    """Split name -> example indices, from a JSON object of lists or an .npz of integer arrays."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"split file not found: {path}")
    if path.suffix == ".json":
        try:
            raw = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: invalid JSON ({exc})") from None
        if not isinstance(raw, dict):
            raise ValueError(f"{path}: expected a JSON object mapping split names to lists of indices")
        for name, indices in raw.items():
            if not isinstance(indices, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in indices):
                raise ValueError(f"{path}: split {name!r} must be a list of integers")
        splits = {name: np.asarray(indices, dtype=np.int64) for name, indices in raw.items()}
    elif path.suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as archive:
                splits = {name: archive[name] for name in archive.files}
        except (ValueError, OSError) as exc:
            raise ValueError(f"{path}: not a readable .npz archive ({exc})") from None
        for name, indices in splits.items():
            if indices.ndim != 1 or not (np.issubdtype(indices.dtype, np.integer) or indices.size == 0):
                raise ValueError(f"{path}: split {name!r} must be a 1-D integer array, got {indices.dtype} {indices.shape}")
    else:
        raise ValueError(f"{path}: split file must be .json or .npz")
    if not splits:
        raise ValueError(f"{path}: contains no splits")
    for name, indices in splits.items():
        out_of_range = (indices < 0) | (indices >= n_examples)
        if out_of_range.any():
            raise ValueError(
                f"{path}: split {name!r} has index {int(indices[out_of_range][0])}, "
                f"out of range for {n_examples} examples"
            )
    return {name: indices.astype(np.intp) for name, indices in splits.items()}


def format_table(summary: dict) -> str:
    """Aligned text: per split and quantity (KLOM, floor, excess), P95 / mean / P99 and the mean's 95 % interval."""
    header = ["split", "n", "quantity", "P95", "mean", "P99", "mean 95% CI"]
    body = []
    for name, entry in summary.items():
        for quantity in QUANTITIES:
            values = entry[quantity]
            low, high = values["mean_ci95"]
            body.append([name, str(entry["n"]), quantity, f"{values['p95']:.4f}", f"{values['mean']:.4f}",
                         f"{values['p99']:.4f}", f"[{low:.4f}, {high:.4f}]"])
    widths = [max(len(line[column]) for line in [header, *body]) for column in range(len(header))]
    lines = []
    for line in [header, *body]:
        cells = [line[0].ljust(widths[0])] + [cell.rjust(width) for cell, width in zip(line[1:], widths[1:])]
        lines.append("  ".join(cells))
    return "\n".join(lines)
