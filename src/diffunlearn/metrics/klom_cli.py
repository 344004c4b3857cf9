"""``python -m diffunlearn klom UNLEARNED.npy ORACLE.npy [--split-file F] [--bins 20]``.

For people who already have margins: prints KLOM's P95 / mean / P99 per split, with the P95 of the
oracle models' own noise floor (KLOM between two halves of the oracle models) beside it.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from diffunlearn.metrics.klom import klom_per_example, noise_floor, summarize_klom


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("unlearned", help="UNLEARNED.npy: margins of the unlearned models, float [models, examples]")
    parser.add_argument("oracle", help="ORACLE.npy: margins of the oracle (retrained) models, float [models, examples]")
    parser.add_argument(
        "--split-file",
        help='JSON object {"forget": [indices], "retain": [...], ...} or .npz with one integer array per split '
        '(default: one split "all")',
    )
    parser.add_argument("--bins", type=int, default=20, help="histogram bins per example (default: 20)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the noise floor's split of the oracle models")


def run(args: argparse.Namespace) -> int:
    if args.bins < 1:
        raise ValueError(f"--bins must be a positive integer, got {args.bins}")
    unlearned = load_margins(args.unlearned)
    oracle = load_margins(args.oracle)
    if unlearned.shape[1] != oracle.shape[1]:
        raise ValueError(
            f"{args.unlearned} has {unlearned.shape[1]} examples but {args.oracle} has {oracle.shape[1]}"
        )
    n_examples = unlearned.shape[1]
    if args.split_file:
        splits = load_splits(args.split_file, n_examples)
    else:
        splits = {"all": np.arange(n_examples)}

    rows = summarize_klom(klom_per_example(unlearned, oracle, bins=args.bins), splits)
    floor_rows = None
    if oracle.shape[0] >= 2:
        floor_rows = summarize_klom(noise_floor(oracle, rng_seed=args.seed, bins=args.bins), splits)
    print(
        f"KLOM (nats): {unlearned.shape[0]} unlearned vs {oracle.shape[0]} oracle models, "
        f"{n_examples} examples, {args.bins} bins"
    )
    print(format_table(rows, floor_rows))
    if floor_rows is None:
        print("noise floor: needs at least 2 oracle models")
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


def format_table(rows: list[dict], floor_rows: list[dict] | None) -> str:
    """Aligned text: split, n, P95, mean, P99 and the noise floor's P95."""
    header = ["split", "n", "P95", "mean", "P99", "floor P95"]
    body = []
    for index, row in enumerate(rows):
        floor = f"{floor_rows[index]['p95']:.4f}" if floor_rows is not None else "n/a"
        body.append([row["split"], str(row["n"]), f"{row['p95']:.4f}", f"{row['mean']:.4f}", f"{row['p99']:.4f}", floor])
    widths = [max(len(line[column]) for line in [header, *body]) for column in range(len(header))]
    lines = []
    for line in [header, *body]:
        cells = [line[0].ljust(widths[0])] + [cell.rjust(width) for cell, width in zip(line[1:], widths[1:])]
        lines.append("  ".join(cells))
    return "\n".join(lines)
