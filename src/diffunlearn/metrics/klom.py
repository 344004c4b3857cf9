"""KLOM: per-example KL divergence between unlearned and oracle model outputs (docs/design.md, KLOM).

For one example, with u = its outputs under the unlearned models and o = under the oracle models:
clip both to [-clip, clip]; ``bins`` equal-width bins from min(u ∪ o) to max(u ∪ o) (end = start + 1
when all values are equal), edges as ``np.linspace(start, end, bins + 1)`` and np.histogram's rule
for explicit edges (bins are [e_i, e_{i+1}) except the last, which is closed); p = hist(u) / |u|,
q = hist(o) / |o|; where p > 0, q = max(q, eps); q renormalised to sum 1; KLOM = sum_{p>0} p log(p/q).

The reference implementation (EasyDUB) runs this per example in a Python loop; here every step is
vectorised over a chunk of examples, and the bin assignment reproduces np.histogram bit for bit.
All arithmetic is float64 (float32 inputs are converted exactly).
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

# Examples whose bins are set up together: a chunk's values (N x 1024 x 8 bytes) are read once for
# their range and again for binning, and stay in cache in between. Clipping copies only a chunk.
DEFAULT_EXAMPLES_PER_CHUNK = 1024

# Examples binned per pass: the three work arrays of a pass (N x 512 each) stay in a core's L2 cache.
_EXAMPLES_PER_PASS = 512

# Chunks whose [examples, bins] counts go through the KL step together; per chunk, numpy's call
# overhead on those small arrays would cost as much as the binning.
_CHUNKS_PER_KL_BLOCK = 16

# Largest rounding error, in bins, that a position and an edge may together have before a column is
# binned by exact comparisons instead (the guess-and-correct assignment needs < 1/2); see _BinGrid.
_MAX_POSITION_ERROR_BINS = 0.25


def klom_per_example(
    unlearned: np.ndarray,
    oracle: np.ndarray,
    bins: int = 20,
    eps: float = 1e-5,
    clip: float = 100.0,
    *,
    examples_per_chunk: int = DEFAULT_EXAMPLES_PER_CHUNK,
    threads: int | None = None,
    backend: str = "auto",
) -> np.ndarray:
    """KLOM of every example: ``unlearned`` [N_u, P] and ``oracle`` [N_o, P] -> float64 [P].

    Rows are models, columns are examples; N_u and N_o may differ. Memory stays bounded by
    ``examples_per_chunk`` columns at a time, so the inputs may be memory-mapped. Contiguous ranges
    of examples go to ``threads`` threads (default: one per CPU; both backends release the GIL).
    ``backend``: "numba" (a compiled kernel, :mod:`diffunlearn.metrics.klom_kernel`), "numpy"
    (vectorised numpy), or "auto" (numba when it can be imported). Both give the same values.
    """
    unlearned = np.asanyarray(unlearned)
    oracle = np.asanyarray(oracle)
    _check_inputs(unlearned, oracle, bins, eps, clip, examples_per_chunk)
    serial = _serial_function(backend)
    n_examples = unlearned.shape[1]
    n_threads = threads or min(os.cpu_count() or 1, max(1, n_examples // _MIN_EXAMPLES_PER_THREAD))
    if n_threads <= 1:
        return serial(unlearned, oracle, bins, eps, clip, examples_per_chunk)
    bounds = np.linspace(0, n_examples, n_threads + 1).astype(int)
    result = np.empty(n_examples, dtype=np.float64)

    def work(i):
        a, b = bounds[i], bounds[i + 1]
        try:
            result[a:b] = serial(unlearned[:, a:b], oracle[:, a:b], bins, eps, clip, examples_per_chunk)
        except ValueError as exc:  # name the example in the whole array, not in the thread's range
            raise ValueError(_shift_example_index(str(exc), a)) from None

    with ThreadPoolExecutor(n_threads) as pool:
        list(pool.map(work, range(n_threads)))
    return result


# Below this many examples per thread, starting threads costs more than it saves.
_MIN_EXAMPLES_PER_THREAD = 4096


def _shift_example_index(message: str, offset: int) -> str:
    import re

    return re.sub(r"example (\d+)", lambda m: f"example {int(m.group(1)) + offset}", message)


def _serial_function(backend: str):
    if backend not in ("auto", "numba", "numpy"):
        raise ValueError(f"backend must be 'auto', 'numba' or 'numpy', got {backend!r}")
    if backend == "numpy":
        return _klom_serial
    try:
        from diffunlearn.metrics import klom_kernel  # noqa: F401
    except ImportError:
        if backend == "numba":
            raise ImportError("klom_per_example(backend='numba') needs numba: pip install numba") from None
        return _klom_serial
    return _klom_serial_compiled


def _klom_serial_compiled(unlearned, oracle, bins, eps, clip, examples_per_chunk) -> np.ndarray:
    from diffunlearn.metrics.klom_kernel import klom_columns

    n_unlearned, n_oracle = unlearned.shape[0], oracle.shape[0]
    p_log_p, log_floored_q, added_by_floor = _kl_tables(n_unlearned, n_oracle, eps)
    n_examples = unlearned.shape[1]
    result = np.empty(n_examples, dtype=np.float64)
    # float64 inputs are read in place (any strides); others are converted a chunk at a time.
    step = n_examples if unlearned.dtype == oracle.dtype == np.float64 else examples_per_chunk
    for first in range(0, n_examples, max(step, 1)):
        last = min(first + step, n_examples)
        u = np.asarray(unlearned[:, first:last], dtype=np.float64)
        o = np.asarray(oracle[:, first:last], dtype=np.float64)
        bad = klom_columns(u, o, int(bins), float(clip), p_log_p, log_floored_q, added_by_floor, result[first:last])
        if bad >= 0:
            raise ValueError(f"margins contain NaN (first at example {first + bad})")
    return result


def _kl_tables(n_unlearned: int, n_oracle: int, eps: float):
    """Lookup tables by bin count: p log p (unlearned), log max(q, eps) and the floor's addition to sum q."""
    p_values = np.arange(n_unlearned + 1) / n_unlearned
    p_log_p = np.zeros(n_unlearned + 1)
    p_log_p[1:] = p_values[1:] * np.log(p_values[1:])
    q_values = np.arange(n_oracle + 1) / n_oracle
    return p_log_p, np.log(np.maximum(q_values, eps)), np.maximum(eps - q_values, 0.0)


def _klom_serial(unlearned, oracle, bins, eps, clip, examples_per_chunk) -> np.ndarray:
    (n_unlearned, n_examples), n_oracle = unlearned.shape, oracle.shape[0]
    scratch = _Scratch(max(n_unlearned, n_oracle) * min(_EXAMPLES_PER_PASS, n_examples))
    result = np.empty(n_examples, dtype=np.float64)
    block_size = examples_per_chunk * _CHUNKS_PER_KL_BLOCK
    for block_first in range(0, n_examples, block_size):
        block_last = min(block_first + block_size, n_examples)
        unlearned_counts = np.empty((block_last - block_first, bins), dtype=np.intp)
        oracle_counts = np.empty_like(unlearned_counts)
        for first in range(block_first, block_last, examples_per_chunk):
            last = min(first + examples_per_chunk, block_last)
            rows = slice(first - block_first, last - block_first)
            unlearned_counts[rows], oracle_counts[rows] = _counts_of_chunk(
                unlearned[:, first:last], oracle[:, first:last], bins, clip, first, scratch
            )
        result[block_first:block_last] = _binned_kl(unlearned_counts, oracle_counts, n_unlearned, n_oracle, eps)
    return result


def summarize_klom(values: np.ndarray, splits: dict[str, np.ndarray]) -> list[dict]:
    """Per split: n, P95, mean and P99 (np.percentile, linear) of the per-example KLOM values.

    ``splits`` maps a split name to integer indices into ``values``. An empty split gets NaN.
    """
    values = np.asarray(values, dtype=np.float64)
    rows = []
    for name, indices in splits.items():
        indices = _as_index_array(indices, len(values), f"split {name!r}")
        selected = values[indices]
        if selected.size == 0:
            p95 = mean = p99 = float("nan")
        else:
            p95, p99 = (float(v) for v in np.percentile(selected, [95, 99]))
            mean = float(selected.mean())
        rows.append({"split": name, "n": int(selected.size), "p95": p95, "mean": mean, "p99": p99})
    return rows


def noise_floor(
    models: np.ndarray,
    rng_seed: int = 0,
    bins: int = 20,
    eps: float = 1e-5,
    clip: float = 100.0,
    *,
    examples_per_chunk: int = DEFAULT_EXAMPLES_PER_CHUNK,
) -> np.ndarray:
    """Per-example KLOM between two disjoint halves of the rows of ``models`` [N, P].

    The rows are shuffled with ``np.random.default_rng(rng_seed).permutation``; the first
    N // 2 play the unlearned models and the remaining N - N // 2 the oracles. This is the KLOM
    that sampling noise alone produces between two sets of models trained the same way.
    """
    models = np.asanyarray(models)
    if models.ndim != 2:
        raise ValueError(f"models must be a 2-D array [models, examples], got shape {models.shape}")
    n_models = models.shape[0]
    if n_models < 2:
        raise ValueError(
            f"the noise floor needs at least 2 models to split into two halves, got {n_models}"
        )
    order = np.random.default_rng(rng_seed).permutation(n_models)
    half = n_models // 2
    return klom_per_example(
        models[np.sort(order[:half])],
        models[np.sort(order[half:])],
        bins=bins,
        eps=eps,
        clip=clip,
        examples_per_chunk=examples_per_chunk,
    )


def _check_inputs(unlearned, oracle, bins, eps, clip, examples_per_chunk) -> None:
    for name, array in (("unlearned", unlearned), ("oracle", oracle)):
        if array.ndim != 2:
            raise ValueError(f"{name} must be a 2-D array [models, examples], got shape {array.shape}")
        if array.shape[0] == 0:
            raise ValueError(f"{name} has no models (shape {array.shape})")
    if unlearned.shape[1] != oracle.shape[1]:
        raise ValueError(
            f"unlearned and oracle must cover the same examples: {unlearned.shape[1]} != {oracle.shape[1]} "
            f"(shapes {unlearned.shape} and {oracle.shape})"
        )
    if int(bins) != bins or bins < 1:
        raise ValueError(f"bins must be a positive integer, got {bins!r}")
    if not eps > 0:
        raise ValueError(f"eps must be positive, got {eps!r}")
    if not clip > 0:
        raise ValueError(f"clip must be positive, got {clip!r}")
    if int(examples_per_chunk) != examples_per_chunk or examples_per_chunk < 1:
        raise ValueError(f"examples_per_chunk must be a positive integer, got {examples_per_chunk!r}")


def _counts_of_chunk(unlearned, oracle, bins, clip, first_example, scratch):
    """Bin counts [P, bins] of the unlearned and the oracle values of a chunk of examples."""
    unlearned, u_min, u_max = _clipped_with_range(unlearned, clip)
    oracle, o_min, o_max = _clipped_with_range(oracle, clip)
    start = np.minimum(u_min, o_min)
    end = np.maximum(u_max, o_max)
    not_a_number = np.isnan(start) | np.isnan(end)
    if not_a_number.any():
        example = first_example + int(np.flatnonzero(not_a_number)[0])
        raise ValueError(f"margins contain NaN (first at example {example})")
    end = np.where(end <= start, start + 1.0, end)
    grid = _BinGrid(start, end, bins)
    return grid.histogram(unlearned, scratch), grid.histogram(oracle, scratch)


def _clipped_with_range(values: np.ndarray, clip: float):
    """float64 values clipped to [-clip, clip], with their per-column min and max."""
    values = np.asarray(values, dtype=np.float64)
    column_min, column_max = values.min(axis=0), values.max(axis=0)
    # Margins are usually well inside the clip range: copy only when clipping changes something.
    # Clipping is monotone, so the clipped extremes are the clipped raw extremes.
    if (column_min < -clip).any() or (column_max > clip).any():
        values = np.clip(values, -clip, clip)
        column_min, column_max = np.clip(column_min, -clip, clip), np.clip(column_max, -clip, clip)
    return values, column_min, column_max


def _linspace_edges(start: np.ndarray, end: np.ndarray, bins: int, out: np.ndarray | None = None) -> np.ndarray:
    """[P, bins + 1] edges, each row bit-identical to ``np.linspace(start[i], end[i], bins + 1)``.

    A vectorised np.linspace switches every row to its denormal-step formula as soon as one row
    has a zero step, so the two formulas are applied per row here.
    """
    delta = end - start
    step = delta / bins
    positions = np.arange(bins + 1, dtype=np.float64)
    edges = np.multiply(positions[None, :], step[:, None], out=out)
    zero_step = step == 0
    if zero_step.any():
        edges[zero_step] = (positions / bins)[None, :] * delta[zero_step, None]
    edges += start[:, None]
    edges[:, -1] = end
    return edges


class _Scratch:
    """Work arrays reused across passes: fresh multi-MiB temporaries for every pass cost page faults."""

    def __init__(self, size: int):
        self._float = np.empty(size, dtype=np.float64)
        self._int = np.empty(size, dtype=np.intp)
        self._bool = np.empty(size, dtype=bool)

    def arrays(self, shape: tuple[int, int]):
        size = shape[0] * shape[1]
        return (self._float[:size].reshape(shape), self._int[:size].reshape(shape),
                self._bool[:size].reshape(shape))


class _BinGrid:
    """The bins of a chunk of examples, and np.histogram's bin assignment against them, vectorised.

    With explicit edges e_0..e_B, np.histogram puts x (e_0 <= x <= e_B) in bin
    k = #{j in 1..B-1 : e_j <= x}. Here x first gets the slot s = #{j in 1..B : e_j <= x} + 1, so
    slots 1..B are bins 0..B-1 and slot B + 1 holds values equal to e_B, which go to the last bin.
    Each column's row of the slot table is [e_0, ..., e_B, +inf]: entry s is the upper edge of slot s.

    The position of x in bins, (x - e_0) * B / (e_B - e_0), is computed with a rounding error of a
    few ulps of max|e| over the bin width, and the edges are off their ideal places by as much.
    While both errors together stay below 1/2 bin, floor(position + 1/2) is the right slot or the
    one before it, and one comparison with that slot's upper edge settles which. Columns with bins
    too narrow for that bound (a spread of a few ulps) are counted by comparing with every edge.
    """

    def __init__(self, start: np.ndarray, end: np.ndarray, bins: int):
        n_columns = start.shape[0]
        self.bins = bins
        self.stride = stride = bins + 2
        slot_table = np.empty((n_columns, stride), dtype=np.float64)
        self.edges = _linspace_edges(start, end, bins, out=slot_table[:, : bins + 1])
        slot_table[:, -1] = np.inf
        self.upper_edge_of_slot = slot_table.ravel()

        column_base = np.arange(n_columns, dtype=np.float64) * stride
        magnitude = np.maximum(np.abs(start), np.abs(end))
        with np.errstate(over="ignore", invalid="ignore"):  # bins / (a denormal spread) overflows
            scale = bins / (end - start)
            error_bins = 8 * bins * np.spacing(magnitude) / (end - start) + 8 * np.spacing(float(n_columns * stride))
            narrow = ~(error_bins <= _MAX_POSITION_ERROR_BINS) | ~np.isfinite(scale)
            self.narrow_columns = np.flatnonzero(narrow)
            self.scale = np.where(narrow, 0.0, scale)
            self.offset = np.where(narrow, column_base, column_base + 0.5 - start * scale)

    def histogram(self, values: np.ndarray, scratch: _Scratch) -> np.ndarray:
        """Counts [P, bins]: row i is np.histogram(values[:, i], self.edges[i])[0]."""
        n_columns, stride, bins = self.edges.shape[0], self.stride, self.bins
        slot_counts = np.empty((n_columns, stride), dtype=np.intp)
        for first in range(0, n_columns, _EXAMPLES_PER_PASS):
            last = min(first + _EXAMPLES_PER_PASS, n_columns)
            slots = self._slots(values[:, first:last], first, scratch)
            slot_counts[first:last] = np.bincount(slots.ravel(), minlength=(last - first) * stride).reshape(-1, stride)
        if self.narrow_columns.size:
            slot_counts[self.narrow_columns] = self._exact_slot_counts(values[:, self.narrow_columns])
        counts = slot_counts[:, 1 : bins + 1]
        counts[:, -1] += slot_counts[:, bins + 1]
        return counts

    def _slots(self, values: np.ndarray, first: int, scratch: _Scratch) -> np.ndarray:
        """Slots of values [N, c] (columns first..first+c of the grid), numbered from column first."""
        position, slots, above = scratch.arrays(values.shape)
        columns = slice(first, first + values.shape[1])
        np.multiply(values, self.scale[columns], out=position)
        position += self.offset[columns] - first * self.stride
        np.copyto(slots, position, casting="unsafe")  # truncation; position > 0, so floor
        upper_edge_of_slot = self.upper_edge_of_slot[first * self.stride :]
        np.take(upper_edge_of_slot, slots, out=position, mode="clip")  # indices are in range
        np.greater_equal(values, position, out=above)
        slots += above
        return slots

    def _exact_slot_counts(self, values: np.ndarray) -> np.ndarray:
        """Slot counts [len(narrow_columns), bins + 2] by comparing every value with every edge."""
        columns = self.narrow_columns
        slots = np.ones(values.shape, dtype=np.intp) + np.arange(columns.size) * self.stride
        for j in range(1, self.bins + 1):
            slots += values >= self.edges[columns, j]
        return np.bincount(slots.ravel(), minlength=columns.size * self.stride).reshape(-1, self.stride)


def _binned_kl(unlearned_counts, oracle_counts, n_unlearned: int, n_oracle: int, eps: float) -> np.ndarray:
    """KL(p || q) per row from bin counts: p = counts / n; q floored at eps where p > 0, renormalised.

    With q' the floored q and Z = sum(q'), KL = sum_p p log p - sum_p p log q' + log Z. Counts are
    integers up to n, so p log p, log q' and the floor's addition to Z come from lookup tables
    instead of a logarithm per (example, bin).
    """
    p_log_p, log_floored_q, added_by_floor = _kl_tables(n_unlearned, n_oracle, eps)

    # Row sums as a matrix-vector product: numpy's sum over a short axis is several times slower.
    ones = np.ones(unlearned_counts.shape[1])
    entropy_term = p_log_p.take(unlearned_counts) @ ones
    cross_term = (unlearned_counts * log_floored_q.take(oracle_counts)) @ ones / n_unlearned
    floored_q_sum = 1.0 + (added_by_floor.take(oracle_counts) * (unlearned_counts > 0)) @ ones
    # KL >= 0; the three terms cancel exactly in theory when p = q, up to rounding in practice.
    return np.maximum(entropy_term - cross_term + np.log(floored_q_sum), 0.0)


def _as_index_array(indices, length: int, what: str) -> np.ndarray:
    indices = np.asarray(indices)
    if indices.size == 0:
        return np.zeros(0, dtype=np.intp)
    if indices.ndim != 1 or not np.issubdtype(indices.dtype, np.integer):
        raise ValueError(f"{what}: indices must be a 1-D list of integers, got dtype {indices.dtype} shape {indices.shape}")
    bad = (indices < 0) | (indices >= length)
    if bad.any():
        raise ValueError(f"{what}: index {int(indices[bad][0])} is out of range for {length} examples")
    return indices.astype(np.intp, copy=False)


# ---------------------------------------------------------------- floor at the same N, excess, intervals
# docs/design.md, KLOM (reading): a KLOM is read against a floor computed at the same N with the same reference
# side, and the excess (KLOM - floor) is reported with an interval over models.

DIRECTIONS = ("unlearned_oracle", "oracle_unlearned")
REFERENCES = ("split", "extra")
QUANTITIES = ("klom", "floor", "excess")
STATISTICS = ("p95", "mean", "p99")
# Fewest models a side of one KLOM comparison may have (the split reference compares halves).
MIN_MODELS_PER_SIDE = 4


def directed_klom(unlearned, oracle, direction: str = "unlearned_oracle", **kwargs) -> np.ndarray:
    """Per-example KLOM in the chosen direction: KL(unlearned || oracle) (default) or KL(oracle || unlearned)."""
    if direction not in DIRECTIONS:
        raise ValueError(f"klom direction must be one of {', '.join(DIRECTIONS)}, got {direction!r}")
    if direction == "unlearned_oracle":
        return klom_per_example(unlearned, oracle, **kwargs)
    return klom_per_example(oracle, unlearned, **kwargs)


def seed_halves(n_models: int, num_splits: int, rng_seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """``num_splits`` random splits of the seed indices 0..n_models-1 into halves A (n // 2) and B (the rest)."""
    if n_models < 2 or num_splits < 1:
        raise ValueError(f"seed_halves needs at least 2 models and 1 split, got {n_models} and {num_splits}")
    rng = np.random.default_rng(rng_seed)
    halves = []
    for _ in range(num_splits):
        order = rng.permutation(n_models)
        halves.append((np.sort(order[: n_models // 2]), np.sort(order[n_models // 2 :])))
    return halves


def klom_and_floor(unlearned, oracle, floor_oracles=None, *, halves=None, direction="unlearned_oracle", **kwargs):
    """Per-example (KLOM, floor), both float64 [P], with the reference side shared.

    ``extra`` reference (``floor_oracles`` given): KLOM(U vs O) and floor KLOM(O' vs O).
    ``split`` reference: ``halves`` is a list of (rows of U, rows of O on the unlearned side, rows of O on the
    reference side), e.g. (A, A, B) from :func:`seed_halves`; KLOM(U_A vs O_B) and floor KLOM(O_A vs O_B),
    each averaged over the list.
    """
    if floor_oracles is not None:
        return directed_klom(unlearned, oracle, direction, **kwargs), directed_klom(floor_oracles, oracle, direction, **kwargs)
    klom = floor = 0.0
    for unlearned_rows, oracle_rows, reference_rows in halves:
        reference = oracle[reference_rows]
        klom = klom + directed_klom(unlearned[unlearned_rows], reference, direction, **kwargs)
        floor = floor + directed_klom(oracle[oracle_rows], reference, direction, **kwargs)
    return klom / len(halves), floor / len(halves)


def split_statistics(klom: np.ndarray, floor: np.ndarray, splits: dict[str, np.ndarray]) -> np.ndarray:
    """[splits, QUANTITIES, STATISTICS]: P95 / mean / P99 of KLOM, floor and excess per split (NaN when empty)."""
    out = np.full((len(splits), len(QUANTITIES), len(STATISTICS)), np.nan)
    for i, indices in enumerate(splits.values()):
        if len(indices) == 0:
            continue
        for j, values in enumerate((klom[indices], floor[indices], klom[indices] - floor[indices])):
            p95, p99 = np.percentile(values, [95, 99])
            out[i, j] = (p95, values.mean(), p99)
    return out


def _bootstrap_sides(n_unlearned, n_oracle, n_floor, halves, rng):
    """One bootstrap draw: every side's models resampled with replacement (the reference side once, shared)."""
    def draw(rows):
        return rows[rng.integers(0, len(rows), len(rows))]

    if halves is None:  # extra reference: U, O, O'
        return None, draw(np.arange(n_unlearned)), draw(np.arange(n_oracle)), draw(np.arange(n_floor))
    return [(draw(a), draw(a), draw(b)) for a, _, b in halves], None, None, None


def check_klom_sides(n_unlearned: int, n_oracle: int, n_floor: int | None, names=("unlearned", "oracle", "floor oracles")):
    """Raise a one-line ValueError when a side of a KLOM comparison has too few models (or the sides do not pair)."""
    if n_floor is None:
        if n_unlearned != n_oracle:
            raise ValueError(
                f"the split reference pairs models by seed index: {names[0]} has {n_unlearned} models but "
                f"{names[1]} has {n_oracle}"
            )
        if n_oracle // 2 < MIN_MODELS_PER_SIDE:
            raise ValueError(
                f"{names[1]}: {n_oracle} models; the split reference compares halves of {n_oracle // 2}, fewer "
                f"than the {MIN_MODELS_PER_SIDE} models per side KLOM needs (use at least {2 * MIN_MODELS_PER_SIDE})"
            )
        return
    for name, n in zip(names, (n_unlearned, n_oracle, n_floor)):
        if n < MIN_MODELS_PER_SIDE:
            raise ValueError(f"{name}: {n} models, fewer than the {MIN_MODELS_PER_SIDE} per side KLOM needs")


def klom_with_floor(
    unlearned, oracle, splits: dict[str, np.ndarray], floor_oracles=None, *, num_splits: int = 10,
    direction: str = "unlearned_oracle", bootstrap: int = 100, rng_seed: int = 0, confidence: float = 0.95, **kwargs,
):
    """KLOM, floor and excess per example, their per-split statistics and bootstrap intervals over models.

    Returns (summary, klom [P], floor [P]). ``summary[split]`` is {"n", "klom": {...}, "floor": {...},
    "excess": {...}}, each with "p95", "mean", "p99" and "<stat>_ci95": [low, high], from ``bootstrap`` redraws
    of the models (with replacement, on every side; the reference side's draw is shared by KLOM and floor;
    see :func:`bootstrap_interval`). ``floor_oracles`` None: the split reference over ``num_splits`` random halvings.
    ``kwargs`` go to :func:`klom_per_example` (bins, eps, clip, backend, ...).
    """
    unlearned, oracle = np.asanyarray(unlearned), np.asanyarray(oracle)
    n_floor = None if floor_oracles is None else len(floor_oracles)
    check_klom_sides(len(unlearned), len(oracle), n_floor)
    splits = {name: _as_index_array(idx, unlearned.shape[1], f"split {name!r}") for name, idx in splits.items()}
    halves = None
    if floor_oracles is None:
        halves = [(a, a, b) for a, b in seed_halves(len(oracle), num_splits, rng_seed)]
    klom, floor = klom_and_floor(unlearned, oracle, floor_oracles, halves=halves, direction=direction, **kwargs)
    point = split_statistics(klom, floor, splits)
    rng = np.random.default_rng([rng_seed, 1])
    draws = np.empty((bootstrap, *point.shape))
    for b in range(bootstrap):
        boot_halves, u_rows, o_rows, f_rows = _bootstrap_sides(len(unlearned), len(oracle), n_floor, halves, rng)
        if halves is None:
            k, f = klom_and_floor(unlearned[u_rows], oracle[o_rows], floor_oracles[f_rows], direction=direction, **kwargs)
        else:
            k, f = klom_and_floor(unlearned, oracle, halves=boot_halves, direction=direction, **kwargs)
        draws[b] = split_statistics(k, f, splits)
    return _summary(point, draws, splits, confidence), klom, floor


def bootstrap_interval(point: np.ndarray, draws: np.ndarray, confidence: float = 0.95):
    """(low, high): the percentile interval of the draws, moved so that the draws' mean sits on ``point``.

    A redraw with replacement repeats models, and repeated values (ties) raise the plug-in KLOM of both sides
    (by ~2 nats at 16 vs 16): the draws' spread is the models' sampling spread, their location is not the
    estimate's. Moving them by mean(draws) - point is the bootstrap's own bias correction.
    """
    if len(draws) == 0:
        return point * np.nan, point * np.nan
    tail = 100 * (1 - confidence) / 2
    with np.errstate(invalid="ignore"):
        low, high = np.percentile(draws, [tail, 100 - tail], axis=0)
        shift = draws.mean(axis=0) - point
    return low - shift, high - shift


def _summary(point, draws, splits, confidence):
    low, high = bootstrap_interval(point, draws, confidence)
    summary = {}
    for i, (name, indices) in enumerate(splits.items()):
        entry = {"n": int(len(indices))}
        for j, quantity in enumerate(QUANTITIES):
            entry[quantity] = {}
            for k, stat in enumerate(STATISTICS):
                entry[quantity][stat] = float(point[i, j, k])
                entry[quantity][f"{stat}_ci95"] = [float(low[i, j, k]), float(high[i, j, k])]
        summary[name] = entry
    return summary


def summary_rows(summary: dict) -> list[dict]:
    """One flat row per split of a :func:`klom_with_floor` summary: split, n, and for q in klom / floor / excess
    and s in p95 / mean / p99 the columns ``q_s``, ``q_s_low`` and ``q_s_high`` (the 95 % interval)."""
    rows = []
    for split, entry in summary.items():
        row = {"split": split, "n": entry["n"]}
        for quantity in QUANTITIES:
            for stat in STATISTICS:
                row[f"{quantity}_{stat}"] = entry[quantity][stat]
                row[f"{quantity}_{stat}_low"], row[f"{quantity}_{stat}_high"] = entry[quantity][f"{stat}_ci95"]
        rows.append(row)
    return rows


def models_per_side_warning(n_unlearned: int, n_oracle: int, n_floor: int | None, recommended: int = 32) -> str | None:
    """A warning when a side of the comparison has fewer than ``recommended`` models (None otherwise)."""
    per_side = min(n_unlearned, n_oracle) // 2 if n_floor is None else min(n_unlearned, n_oracle, n_floor)
    if per_side >= recommended:
        return None
    reference = "split reference: halves of the seeds" if n_floor is None else "extra reference"
    return (f"warning: KLOM compares {per_side} models per side ({reference}), fewer than {recommended}: its plug-in "
            f"estimate is strongly biased upward at small N and only the excess over the floor can be read")


def nan_summary(splits: dict[str, np.ndarray]) -> dict:
    """A :func:`klom_with_floor` summary with every value NaN: for a run with too few models to read KLOM."""
    nan = float("nan")
    return {name: {"n": int(len(idx)), **{q: {k: v for s in STATISTICS for k, v in ((s, nan), (f"{s}_ci95", [nan, nan]))}
                                          for q in QUANTITIES}} for name, idx in splits.items()}
