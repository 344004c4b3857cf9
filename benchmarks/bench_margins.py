"""Margins: our batched ``diffunlearn.margins.compute_margins`` against a per-example loop calling the model.

    python benchmarks/bench_margins.py                         # both models, CPU, 1 thread
    python benchmarks/bench_margins.py --examples 2048 --repeats 5
    python benchmarks/bench_margins.py --model cifar10 --device cuda --batch-size 4096

The per-example loop is what a user writes from docs/design.md's definition (Margin): for each example, its K
(t, eps) pairs (the same ``margin_noise`` pairs as ours, so the two results must agree), one forward
of the model on those K noisy inputs, the mean squared error read back to the host. Ours takes
``--batch-size`` noisy inputs (of many examples) per chunk (on the CPU fed to the model in cache-sized
slices, ``diffunlearn.margins.CPU_FORWARD_PIXELS``) and reads the losses back once. Both score the same
UNet (built from the same seed, eval mode), the same examples, pairs, device and precision
(``--precision bf16``: both under torch.autocast), with a warm-up call of each not timed; ``--repeats``
rounds alternate the two, and throughput (noisy inputs per second, "img/s") is reported from the best
and from the median round. ``--batch-size`` takes several values to show the curve.

Processes: as in bench_sample.py (``--processes separate``, the default: each side in its own worker
process, ours with its CPU allocator setting, the loop with glibc's defaults; ``same``: one process).
Our fast path follows the config's "auto" (compile and channels_last on CUDA, off on the CPU);
``--compile`` / ``--channels-last`` force them.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_sample import (  # noqa: E402
    DIFFUSION,
    MODELS,
    Side,
    add_common_arguments,
    compare,
    describe_peak,
    describe_processes,
    machine,
    model_config,
    peak_flops,
    report,
    setup_process,
)

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


def make_margins(side: str, name: str, device: str, precision: str, n_examples: int, num_pairs: int,
                 batch_size: int | None, fast: dict):
    import numpy as np
    import torch

    from diffunlearn.margins import compute_margins
    from diffunlearn.models import build_scheduler, build_unet

    spec = MODELS[name]
    device = torch.device(device)
    unet = build_unet(model_config(name), spec["size"], spec["channels"], seed=0).to(device).eval()
    g = torch.Generator().manual_seed(0)
    x0 = (torch.rand((n_examples, spec["channels"], spec["size"], spec["size"]), generator=g) * 2 - 1).to(device)
    indices = np.arange(n_examples) * 3 + 11  # data-set indices, not positions
    alphas_cumprod = build_scheduler(DIFFUSION).alphas_cumprod.to(device)
    synchronize = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    autocast = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if precision == "bf16" else contextlib.nullcontext

    def call():
        with autocast():
            if side == "peer":
                return per_example_margins(unet, x0, indices, alphas_cumprod, num_pairs, 0, device)
            return compute_margins(unet, x0, indices, alphas_cumprod, num_pairs=num_pairs, seed=0,
                                   batch_size=batch_size, device=device, **fast)

    def run():
        synchronize()
        start = time.perf_counter()
        call()
        synchronize()
        return time.perf_counter() - start

    start = time.perf_counter()
    values = call()  # warm-up (and compilation)
    return run, {"warmup_seconds": time.perf_counter() - start, "margins": values}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_arguments(parser)
    parser.add_argument("--examples", type=int, help="examples scored per call (default: 512 / 32 / 4096 per model)")
    parser.add_argument("--num-pairs", type=int, default=8, help="K, as margins.num_pairs")
    parser.add_argument("--batch-size", type=int, nargs="+", default=[2048],
                        help="ours: noisy inputs per chunk (default: margins.batch_size's default; on the CPU each chunk "
                             "goes through the model in slices of at most 32768 pixels: 512 rows of 8x8, 32 of 32x32)")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None, help="default: the config's auto")
    parser.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None)
    args = parser.parse_args()

    import numpy as np

    from diffunlearn.flops import forward_flops
    from diffunlearn.models import build_unet, count_parameters
    from diffunlearn.speed import resolve_switch

    tuned = setup_process(args)
    peak = peak_flops(args)
    fast = dict(compile=resolve_switch(args.compile, args.device),
                channels_last=resolve_switch(args.channels_last, args.device))
    print(f"machine: {machine(args.device)}")
    print(f"ours: compute_margins, fast path {fast}; peer: per-example loop (K inputs per forward); "
          f"precision {args.precision}; K = {args.num_pairs}; {describe_processes(args, tuned)}")

    for name in args.model:
        spec = MODELS[name]
        n_examples = args.examples or EXAMPLES[name]
        inputs = n_examples * args.num_pairs
        unet = build_unet(model_config(name), spec["size"], spec["channels"])
        params = count_parameters(unet)
        input_flops = forward_flops(unet, (1, spec["channels"], spec["size"], spec["size"]))
        print(f"\n[{name}] {spec['channels']}x{spec['size']}x{spec['size']}, {params / 1e6:.2f}M parameters, "
              f"{n_examples} examples x {args.num_pairs} pairs = {inputs} noisy inputs per call, {args.repeats} interleaved rounds")
        kwargs = dict(name=name, device=args.device, precision=args.precision, n_examples=n_examples,
                      num_pairs=args.num_pairs, fast=fast)
        separate = args.processes == "separate"
        sides = {"peer": Side("bench_margins", "make_margins", {"side": "peer", "batch_size": None, **kwargs},
                              separate=separate, ours=False, threads=args.threads)}
        for batch_size in args.batch_size:
            sides[f"ours b{batch_size}"] = Side("bench_margins", "make_margins", {"side": "ours", "batch_size": batch_size, **kwargs},
                                                separate=separate, ours=True, threads=args.threads)
        reference = sides["peer"].info["margins"]
        difference = max(float(np.abs(s.info["margins"] - reference).max()) for s in sides.values())
        print("warm-up: " + ", ".join(f"{k} {s.info['warmup_seconds']:.1f} s" for k, s in sides.items())
              + f"; max |ours - loop| = {difference:.2e} (margins of size {float(np.abs(reference).mean()):.3f})")
        report(compare(sides, args.repeats), inputs, flops_per_call=input_flops * inputs, peak=peak)
    print(f"\n{describe_peak(peak, args)}")
    print(f"\nload average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
