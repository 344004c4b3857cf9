"""Compiled KLOM kernel (numba): one read of the margins for the range, one for the bins, per example.

Same definition and same bin assignment as the numpy path in :mod:`diffunlearn.metrics.klom` (and
np.histogram): a value's bin is first guessed from its position and then corrected by exact
comparisons with the bin edges, so every value lands where np.histogram puts it. Columns are taken
in blocks whose margins stay in cache between the range pass and the binning pass.
"""
from __future__ import annotations

import numpy as np
from numba import njit

# Examples per block: BLOCK columns of 100-200 models (float64) stay in a core's L2 cache.
BLOCK = 64


@njit(cache=True, nogil=True)
def klom_columns(unlearned, oracle, bins, clip, p_log_p, log_floored_q, added_by_floor, out):  # pragma: no cover
    """KLOM of every column of ``unlearned`` [N_u, c] / ``oracle`` [N_o, c] into ``out`` [c].

    Returns -1, or the first column holding a NaN (``out`` is then incomplete).
    """
    n_unlearned = unlearned.shape[0]
    n_columns = unlearned.shape[1]
    lo = np.empty(BLOCK)
    hi = np.empty(BLOCK)
    edges = np.empty((BLOCK, bins + 1))
    scale = np.empty(BLOCK)
    counts = np.empty((2, BLOCK, bins), dtype=np.int64)
    for first in range(0, n_columns, BLOCK):
        width = min(BLOCK, n_columns - first)
        for j in range(width):
            lo[j] = np.inf
            hi[j] = -np.inf
        for side in range(2):
            values = unlearned if side == 0 else oracle
            for i in range(values.shape[0]):
                for j in range(width):
                    x = values[i, first + j]
                    if x != x:
                        return first + j
                    x = min(max(x, -clip), clip)
                    lo[j] = min(lo[j], x)
                    hi[j] = max(hi[j], x)
        for j in range(width):
            start = lo[j]
            end = hi[j]
            if end <= start:
                end = start + 1.0
            delta = end - start
            step = delta / bins
            for k in range(bins + 1):  # np.linspace(start, end, bins + 1), bit for bit
                edges[j, k] = (k / bins * delta + start) if step == 0.0 else (k * step + start)
            edges[j, bins] = end
            s = bins / delta
            scale[j] = s if np.isfinite(s) else 0.0
        counts[:, :width, :] = 0
        for side in range(2):
            values = unlearned if side == 0 else oracle
            for i in range(values.shape[0]):
                for j in range(width):
                    x = min(max(values[i, first + j], -clip), clip)
                    position = (x - edges[j, 0]) * scale[j]
                    k = int(position) if position < bins - 1 else bins - 1
                    # np.histogram: bin k holds e_k <= x < e_{k+1}; the last bin also holds x == e_B
                    while k < bins - 1 and x >= edges[j, k + 1]:
                        k += 1
                    while k > 0 and x < edges[j, k]:
                        k -= 1
                    counts[side, j, k] += 1
        for j in range(width):
            entropy = 0.0
            cross = 0.0
            floored_q_sum = 1.0
            for k in range(bins):
                c = counts[0, j, k]
                if c > 0:
                    q = counts[1, j, k]
                    entropy += p_log_p[c]
                    cross += c * log_floored_q[q]
                    floored_q_sum += added_by_floor[q]
            value = entropy - cross / n_unlearned + np.log(floored_q_sum)
            out[first + j] = value if value > 0.0 else 0.0
    return -1
