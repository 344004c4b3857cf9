"""Sampling: our DDPM sampler (``diffunlearn.sample.sample_images``) against diffusers' ``DDPMPipeline``.

    python benchmarks/bench_sample.py                      # both models, CPU, 1 thread, short chains (see below)
    python benchmarks/bench_sample.py --steps 1000         # the full 1000-step chain
    python benchmarks/bench_sample.py --model cifar10 --device cuda --precision bf16 --batch 128 --steps 1000

Both run in this process on the same UNet instance (random weights, eval mode), the same scheduler
settings (DDPM, linear betas, epsilon, fixed_small variance, clip_sample), the same batch, device and
precision (``--precision bf16``: both under torch.autocast). One call of each = one batch sampled from
noise to uint8 images (ours) / numpy images (the pipeline), start-up included, as a user would call it.
A warm-up call of each (a 2-step chain, plus compilation when a fast path compiles) is not timed; then
``--repeats`` rounds alternate the two (ours first in even rounds, the pipeline first in odd ones), and
img/s is reported from the best and from the median round. Both sample the same stride of the
1000-step chain: ``--steps`` (default: 100 for the 8x8 model, as the embedded default samples, and
10 for the 32x32 one, so that the run takes a couple of minutes on 2 cores; per-step cost does not
depend on the number of steps).

Our fast path follows the config's "auto": compile, CUDA graphs and channels_last on CUDA, none on the
CPU; ``--compile`` / ``--channels-last`` force them (``--compile`` on the CPU adds minutes of compiling).
"""
from __future__ import annotations

import argparse
import contextlib
import os
import platform
import statistics
import sys
import time

# this checkout's package, whatever copy is installed
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))

MODELS = {
    # the embedded default's UNet (config/config.yaml) on 8x8x1 digits
    "default": dict(size=8, channels=1, batch=128, steps=100,
                    model={"block_out_channels": [16, 32], "layers_per_block": 1, "norm_num_groups": 8}),
    # a 32x32x3 UNet of 4.4M parameters, attention at 16x16
    "32px": dict(size=32, channels=3, batch=16, steps=10,
                 model={"block_out_channels": [64, 128, 128], "layers_per_block": 1, "norm_num_groups": 32,
                        "attention_resolutions": [16]}),
    # the CIFAR-10 preset's 35.7M-parameter UNet (config/cifar10.yaml), for GPUs
    "cifar10": dict(size=32, channels=3, batch=128, steps=1000, model=None),
}


def model_config(name: str) -> dict:
    from diffunlearn.config import load_config, validate_config

    spec = MODELS[name]
    if spec["model"] is None:
        root = os.path.join(os.path.dirname(__file__), "..", "config", "cifar10.yaml")
        return load_config(root)["model"]
    return validate_config({"model": dict(spec["model"])})["model"]


def machine(device: str) -> str:
    import diffusers
    import torch

    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as handle:
            cpu = next(line.split(":", 1)[1].strip() for line in handle if line.startswith("model name"))
    except (OSError, StopIteration):
        cpu = platform.processor() or cpu
    where = f"{cpu}, {os.cpu_count()} cores, {torch.get_num_threads()} torch thread(s)"
    if device.startswith("cuda"):
        where = f"{torch.cuda.get_device_name(torch.device(device))} ({where})"
    return (f"{where}; Python {platform.python_version()}, torch {torch.__version__}, diffusers {diffusers.__version__}; "
            f"load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


def interleaved(functions: dict, repeats: int, synchronize) -> dict:
    """Seconds of each call, alternating the order every round."""
    times = {name: [] for name in functions}
    names = list(functions)
    for r in range(repeats):
        for name in (names if r % 2 == 0 else names[::-1]):
            synchronize()
            start = time.perf_counter()
            functions[name]()
            synchronize()
            times[name].append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", nargs="+", default=["default", "32px"], choices=sorted(MODELS))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the pipeline's jobs use sampling.threads = 1)")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    parser.add_argument("--batch", type=int, help="images per call (default: 128 for the 8x8 model, 16 for the 32x32 one)")
    parser.add_argument("--steps", type=int, help="inference steps of both (default: 100 / 10 / 1000 per model)")
    parser.add_argument("--malloc-tune", action=argparse.BooleanOptionalAction, default=True,
                        help="CPU: glibc keeps freed memory, for both sides (diffunlearn.sample.tune_cpu_allocator)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None, help="default: the config's auto")
    parser.add_argument("--cuda-graphs", action=argparse.BooleanOptionalAction, default=None)
    parser.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None)
    args = parser.parse_args()

    import torch
    from diffusers import DDPMPipeline

    from diffunlearn.models import build_scheduler, build_unet, count_parameters
    from diffunlearn.sample import resolve_switch, sample_images

    torch.set_num_threads(args.threads)
    from diffunlearn.sample import tune_cpu_allocator

    # Our CPU path lets glibc keep freed memory (no page faults for every large activation); it is
    # process-wide, so it is set here once for both sides (--no-malloc-tune: glibc's defaults for both).
    if not args.malloc_tune:
        os.environ["DIFFUNLEARN_MALLOC_TUNE"] = "0"
    allocator = args.malloc_tune and args.device == "cpu" and tune_cpu_allocator()
    device = torch.device(args.device)
    synchronize = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    compile_unet = resolve_switch("auto" if args.compile is None else args.compile, device)
    fast = dict(compile=compile_unet,
                cuda_graphs=compile_unet and resolve_switch("auto" if args.cuda_graphs is None else args.cuda_graphs, device),
                channels_last=resolve_switch("auto" if args.channels_last is None else args.channels_last, device))
    diffusion = {"num_train_timesteps": 1000, "beta_schedule": "linear", "beta_start": 1e-4, "beta_end": 0.02}
    print(f"machine: {machine(args.device)}; glibc malloc {'tuned (both sides)' if allocator else 'defaults'}")
    print(f"ours: sample_images, fast path {fast}; peer: DDPMPipeline; precision {args.precision}")

    for name in args.model:
        spec = MODELS[name]
        batch, steps = args.batch or spec["batch"], args.steps or spec["steps"]
        unet = build_unet(model_config(name), spec["size"], spec["channels"], seed=0).to(device).eval()
        ours_scheduler, peer_scheduler = build_scheduler(diffusion), build_scheduler(diffusion)
        pipe = DDPMPipeline(unet=unet, scheduler=peer_scheduler)
        pipe.set_progress_bar_config(disable=True)
        autocast = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if args.precision == "bf16" else contextlib.nullcontext

        def ours(n_steps=steps):
            with autocast():
                return sample_images(unet, ours_scheduler, batch, num_inference_steps=n_steps, seed=0,
                                     batch_size=batch, device=device, **fast)

        def peer(n_steps=steps):
            with autocast():
                return pipe(batch_size=batch, num_inference_steps=n_steps, output_type="np",
                            generator=torch.Generator(device).manual_seed(0)).images

        print(f"\n[{name}] {spec['channels']}x{spec['size']}x{spec['size']}, {count_parameters(unet) / 1e6:.2f}M parameters, "
              f"batch {batch}, {steps} of 1000 steps (stride {1000 // steps}), {args.repeats} interleaved rounds")
        start = time.perf_counter()
        ours(2), peer(2)  # warm-up (and compilation)
        synchronize()
        print(f"warm-up (2-step chains{', compiling' if fast['compile'] else ''}): {time.perf_counter() - start:.1f} s")
        times = interleaved({"ours": ours, "peer": peer}, args.repeats, synchronize)
        best = {k: batch / min(v) for k, v in times.items()}
        median = {k: batch / statistics.median(v) for k, v in times.items()}
        for k in times:
            print(f"{k:>5}: {best[k]:9.2f} img/s best, {median[k]:9.2f} img/s median "
                  f"({', '.join(f'{t:.2f}' for t in times[k])} s per call)")
        print(f"ratio ours / DDPMPipeline: {best['ours'] / best['peer']:.2f}x best, {median['ours'] / median['peer']:.2f}x median")
    print(f"\nload average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
