"""KLOM: vectorised ``klom_per_example`` against the per-example loop (np.histogram per example).

    python benchmarks/bench_klom.py [--models 100] [--examples 60000] [--loop-examples 3000] [--repeats 5]

Both run in this process on the same margins (``--models`` unlearned + ``--models`` oracle models x
``--examples`` examples, float64). The loop is timed on the first ``--loop-examples`` examples and
extrapolated linearly to all of them (its cost per example does not depend on the others); both
results are checked to agree on those examples. Times are the best of ``--repeats`` runs.
"""
from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np

from diffunlearn.metrics.klom import klom_per_example


def per_example_loop(unlearned, oracle, bins=20, eps=1e-5, clip=100.0):
    """The KLOM of docs/design.md, one example at a time, with np.histogram (EasyDUB's structure)."""
    values = np.empty(unlearned.shape[1])
    for i in range(unlearned.shape[1]):
        u = np.clip(unlearned[:, i], -clip, clip)
        o = np.clip(oracle[:, i], -clip, clip)
        start, end = min(u.min(), o.min()), max(u.max(), o.max())
        if start == end:
            end = start + 1
        edges = np.linspace(start, end, bins + 1)
        p = np.histogram(u, bins=edges)[0] / len(u)
        q = np.histogram(o, bins=edges)[0] / len(o)
        support = p > 0
        q = np.where(support, np.maximum(q, eps), q)
        q = q / q.sum()
        values[i] = np.sum(p[support] * np.log(p[support] / q[support]))
    return values


def synthetic_margins(n_models: int, n_examples: int, seed: int = 0):
    """Margins shaped like the real ones: negative losses, per-example level and spread."""
    rng = np.random.default_rng(seed)
    level = rng.uniform(-0.2, -0.01, size=n_examples)
    spread = rng.uniform(0.001, 0.01, size=n_examples)
    unlearned = level + spread * rng.standard_normal((n_models, n_examples))
    oracle = level + 0.001 + 1.2 * spread * rng.standard_normal((n_models, n_examples))
    return unlearned, oracle


def best_times(function, repeats: int) -> tuple[float, float]:
    """Best wall-clock and best CPU seconds of this process over ``repeats`` runs."""
    wall, cpu = [], []
    for _ in range(repeats):
        wall_start, cpu_start = time.perf_counter(), time.process_time()
        function()
        wall.append(time.perf_counter() - wall_start)
        cpu.append(time.process_time() - cpu_start)
    return min(wall), min(cpu)


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=100, help="unlearned models, and as many oracle models")
    parser.add_argument("--examples", type=int, default=60_000)
    parser.add_argument("--loop-examples", type=int, default=3_000, help="examples the loop is timed on")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    unlearned, oracle = synthetic_margins(args.models, args.examples)
    subset = slice(0, min(args.loop_examples, args.examples))
    print(f"machine: {cpu_name()}, {os.cpu_count()} cores, Python {platform.python_version()}, numpy {np.__version__}")
    print(f"load average before: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    print(f"input: {args.models} unlearned + {args.models} oracle models x {args.examples} examples, float64")

    numpy_only = klom_per_example(unlearned, oracle, backend="numpy")
    vectorised = klom_per_example(unlearned, oracle)  # "auto": the compiled kernel (compiled or loaded here)
    looped = per_example_loop(unlearned[:, subset], oracle[:, subset])
    difference = float(np.max(np.abs(vectorised[subset] - looped)))
    print(f"max |vectorised - loop| on the loop's {looped.size} examples: {difference:.2e}")
    print(f"max |numba - numpy backend| on all examples: {float(np.max(np.abs(vectorised - numpy_only))):.2e}")

    vectorised_wall, vectorised_cpu = best_times(lambda: klom_per_example(unlearned, oracle), args.repeats)
    numpy_wall, numpy_cpu = best_times(lambda: klom_per_example(unlearned, oracle, backend="numpy"), args.repeats)
    loop_repeats = max(1, args.repeats // 2)
    loop_subset_wall, loop_subset_cpu = best_times(
        lambda: per_example_loop(unlearned[:, subset], oracle[:, subset]), loop_repeats
    )
    scale = args.examples / looped.size
    loop_wall, loop_cpu = loop_subset_wall * scale, loop_subset_cpu * scale
    print(f"klom_per_example (numba kernel): {vectorised_wall:.3f} s wall, {vectorised_cpu:.3f} s CPU (best of {args.repeats})")
    print(f"klom_per_example (numpy backend): {numpy_wall:.3f} s wall, {numpy_cpu:.3f} s CPU (best of {args.repeats})")
    print(
        f"per-example loop: {loop_wall:.2f} s wall, {loop_cpu:.2f} s CPU (best of {loop_repeats}; timed on "
        f"{looped.size} examples, {loop_subset_wall:.3f} s wall, extrapolated linearly to {args.examples})"
    )
    print(f"speed-up: {loop_wall / vectorised_wall:.1f}x wall, {loop_cpu / vectorised_cpu:.1f}x CPU "
          f"(numpy backend: {loop_wall / numpy_wall:.1f}x wall)")
    print(f"load average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
