"""Margins: our batched ``diffunlearn.margins.compute_margins`` against a per-example loop calling the model.

    python benchmarks/bench_margins.py                         # both models, CPU, 1 thread
    python benchmarks/bench_margins.py --examples 2048 --repeats 5
    python benchmarks/bench_margins.py --model cifar10 --device cuda --batch-size 4096

The per-example loop is what a user writes from DESIGN.md's definition: for each example, its K
(t, eps) pairs (the same ``margin_noise`` pairs as ours, so the two results must agree), one forward
of the model on those K noisy inputs, the mean squared error read back to the host. Ours takes
``--batch-size`` noisy inputs (of many examples) per forward and reads the losses back once. Both run
in this process on the same UNet (random weights, eval mode), the same examples, pairs, device and
precision (``--precision bf16``: both under torch.autocast), with a warm-up call of each not timed;
``--repeats`` rounds alternate the two, and throughput (noisy inputs per second, "img/s") is reported
from the best and from the median round. ``--batch-size`` takes several values to show the curve.

Our fast path follows the config's "auto" (compile and channels_last on CUDA, off on the CPU);
``--compile`` / ``--channels-last`` force them.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_sample import MODELS, interleaved, machine, model_config  # noqa: E402

EXAMPLES = {"default": 512, "32px": 32, "cifar10": 4096}


def per_example_margins(unet, x0, indices, alphas_cumprod, num_pairs, seed, device):
    """One forward per example on its K noisy inputs; the loss read back per example."""
    import numpy as np
    import torch

    from diffunlearn.margins import margin_noise

    out = np.empty(len(indices))
    shape = tuple(x0.shape[1:])
    with torch.no_grad():
        for row, index in enumerate(indices):
            t, eps = margin_noise(np.array([index]), num_pairs, shape, len(alphas_cumprod), seed)
            t = torch.from_numpy(t[0]).to(device)
            eps = torch.from_numpy(eps[0]).to(device)
            alpha_bar = alphas_cumprod[t].view(-1, 1, 1, 1)
            noisy = alpha_bar.sqrt() * x0[row] + (1 - alpha_bar).sqrt() * eps
            predicted = unet(noisy, t).sample
            out[row] = -((eps - predicted.float()) ** 2).mean(dim=(1, 2, 3)).double().mean().item()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", nargs="+", default=["default", "32px"], choices=sorted(MODELS))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the pipeline's jobs use margins.threads = 1)")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    parser.add_argument("--examples", type=int, help="examples scored per call (default: 512 / 32 / 4096 per model)")
    parser.add_argument("--num-pairs", type=int, default=8, help="K, as margins.num_pairs")
    parser.add_argument("--batch-size", type=int, nargs="+", default=[256], help="our noisy inputs per forward")
    parser.add_argument("--malloc-tune", action=argparse.BooleanOptionalAction, default=True,
                        help="CPU: glibc keeps freed memory, for both sides (diffunlearn.sample.tune_cpu_allocator)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None, help="default: the config's auto")
    parser.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None)
    args = parser.parse_args()

    import numpy as np
    import torch

    from diffunlearn.margins import compute_margins
    from diffunlearn.models import build_scheduler, build_unet, count_parameters
    from diffunlearn.sample import resolve_switch

    torch.set_num_threads(args.threads)
    from diffunlearn.sample import tune_cpu_allocator

    # Our CPU path lets glibc keep freed memory (no page faults for every large activation); it is
    # process-wide, so it is set here once for both sides (--no-malloc-tune: glibc's defaults for both).
    if not args.malloc_tune:
        os.environ["DIFFUNLEARN_MALLOC_TUNE"] = "0"
    allocator = args.malloc_tune and args.device == "cpu" and tune_cpu_allocator()
    device = torch.device(args.device)
    synchronize = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    fast = dict(compile=resolve_switch("auto" if args.compile is None else args.compile, device),
                channels_last=resolve_switch("auto" if args.channels_last is None else args.channels_last, device))
    diffusion = {"num_train_timesteps": 1000, "beta_schedule": "linear", "beta_start": 1e-4, "beta_end": 0.02}
    alphas_cumprod = build_scheduler(diffusion).alphas_cumprod.to(device)
    autocast = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if args.precision == "bf16" else contextlib.nullcontext
    print(f"machine: {machine(args.device)}; glibc malloc {'tuned (both sides)' if allocator else 'defaults'}")
    print(f"ours: compute_margins, fast path {fast}; peer: per-example loop (K inputs per forward); "
          f"precision {args.precision}; K = {args.num_pairs}")

    for name in args.model:
        spec = MODELS[name]
        n_examples = args.examples or EXAMPLES[name]
        unet = build_unet(model_config(name), spec["size"], spec["channels"], seed=0).to(device).eval()
        g = torch.Generator().manual_seed(0)
        x0 = (torch.rand((n_examples, spec["channels"], spec["size"], spec["size"]), generator=g) * 2 - 1).to(device)
        indices = np.arange(n_examples) * 3 + 11  # data-set indices, not positions
        inputs = n_examples * args.num_pairs
        print(f"\n[{name}] {spec['channels']}x{spec['size']}x{spec['size']}, {count_parameters(unet) / 1e6:.2f}M parameters, "
              f"{n_examples} examples x {args.num_pairs} pairs = {inputs} noisy inputs per call, {args.repeats} interleaved rounds")

        def peer():
            with autocast():
                return per_example_margins(unet, x0, indices, alphas_cumprod, args.num_pairs, 0, device)

        functions = {"peer": peer}
        for batch_size in args.batch_size:
            def ours(batch_size=batch_size):
                with autocast():
                    return compute_margins(unet, x0, indices, alphas_cumprod, num_pairs=args.num_pairs, seed=0,
                                           batch_size=batch_size, device=device, **fast)
            functions[f"ours b{batch_size}"] = ours
        start = time.perf_counter()
        results = {k: f() for k, f in functions.items()}  # warm-up (and compilation)
        synchronize()
        print(f"warm-up: {time.perf_counter() - start:.1f} s; max |ours - loop| = "
              f"{max(float(np.abs(v - results['peer']).max()) for v in results.values()):.2e} "
              f"(margins of size {float(np.abs(results['peer']).mean()):.3f})")
        times = interleaved(functions, args.repeats, synchronize)
        best = {k: inputs / min(v) for k, v in times.items()}
        median = {k: inputs / statistics.median(v) for k, v in times.items()}
        for k in times:
            print(f"{k:>11}: {best[k]:9.1f} img/s best, {median[k]:9.1f} img/s median "
                  f"({', '.join(f'{t:.2f}' for t in times[k])} s per call)")
        for k in times:
            if k != "peer":
                print(f"ratio {k} / per-example loop: {best[k] / best['peer']:.2f}x best, {median[k] / median['peer']:.2f}x median")
    print(f"\nload average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
