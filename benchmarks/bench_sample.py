"""Sampling: our DDPM sampler (``diffunlearn.sample.sample_images``) against diffusers' ``DDPMPipeline``.

    python benchmarks/bench_sample.py                      # both models, CPU, 1 thread, short chains (see below)
    python benchmarks/bench_sample.py --steps 1000         # the full 1000-step chain
    python benchmarks/bench_sample.py --model cifar10 --device cuda --precision bf16 --batch 128 --steps 1000

Both sample with the same UNet (built from the same seed: the same random weights, eval mode), the
same scheduler settings (DDPM, linear betas, epsilon, fixed_small variance, clip_sample), the same
batch, device and precision (``--precision bf16``: both under torch.autocast). One call of each = one
batch sampled from noise to uint8 images (ours) / numpy images (the pipeline), start-up included, as a
user would call it. A warm-up call of each (a 2-step chain, plus compilation when a fast path
compiles) is not timed; then ``--repeats`` rounds alternate the two (ours first in even rounds, the
pipeline first in odd ones), and img/s is reported from the best and from the median round. Both
sample the same stride of the 1000-step chain: ``--steps`` (default: 100 for the 8x8 model, as the
embedded default samples, and 10 for the 32x32 one, so that the run takes a couple of minutes on 2
cores; the cost per step does not depend on the number of steps).

Processes (``--processes``): by default each side runs in its own worker process, started once and
driven in turn by this one, so that each has the process its library gives it: ours sets glibc's
allocator to keep freed memory on the CPU (``diffunlearn.speed.tune_cpu_allocator``), the pipeline
runs with glibc's defaults, as a diffusers user gets them. ``--processes same`` runs both in this
process with one allocator setting for both (``--no-malloc-tune``: glibc's defaults for both), which
isolates what the two loops themselves cost.

Our fast path follows the config's "auto": compile, CUDA graphs and channels_last on CUDA, none on the
CPU; ``--compile`` / ``--channels-last`` force them.
"""
from __future__ import annotations

import argparse
import contextlib
import multiprocessing
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
DIFFUSION = {"num_train_timesteps": 1000, "beta_schedule": "linear", "beta_start": 1e-4, "beta_end": 0.02}


def model_config(name: str) -> dict:
    from diffunlearn.config import load_config, validate_config

    spec = MODELS[name]
    if spec["model"] is None:
        root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "config", "cifar10.yaml")
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


def add_common_arguments(parser, models=("default", "32px")) -> None:
    parser.add_argument("--model", nargs="+", default=list(models), choices=sorted(MODELS))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the pipeline's jobs use <family>.threads = 1)")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--processes", default="separate", choices=["separate", "same"],
                        help="separate: each side in its own worker process with its library's setup (default); "
                             "same: both in this process")
    parser.add_argument("--malloc-tune", action=argparse.BooleanOptionalAction, default=True,
                        help="--processes same, CPU: glibc keeps freed memory for both sides (tune_cpu_allocator)")


# ---------------------------------------------------------------- sides in worker processes


def _worker(conn, module: str, factory: str, kwargs: dict, env: dict, threads: int) -> None:
    """A side of a benchmark in its own process: build it (untimed warm-up included), then run on request."""
    os.environ.update(env)
    import importlib

    import torch

    torch.set_num_threads(threads)
    try:
        run, info = getattr(importlib.import_module(module), factory)(**kwargs)
        conn.send(("ready", info))
        while conn.recv():
            conn.send(("done", run()))
    except BaseException as exc:  # report, do not hang the driver
        import traceback

        conn.send(("error", "".join(traceback.format_exception(exc))))
    finally:
        conn.close()


class Side:
    """One side (ours or the peer): ``info`` from its set-up, ``run()`` -> seconds of one timed call."""

    def __init__(self, module, factory, kwargs, *, separate: bool, ours: bool, threads: int):
        self.process = None
        if not separate:
            import importlib

            self._run, self.info = getattr(importlib.import_module(module), factory)(**kwargs)
            return
        # ours: our library's own CPU setup; the peer: glibc's defaults (our tuning off even if something calls it)
        env = {"DIFFUNLEARN_MALLOC_TUNE": "1" if ours else "0"}
        context = multiprocessing.get_context("spawn")
        self.conn, child = context.Pipe()
        self.process = context.Process(target=_worker, args=(child, module, factory, kwargs, env, threads), daemon=True)
        self.process.start()
        child.close()
        self.info = self._receive()

    def _receive(self):
        status, value = self.conn.recv()
        if status == "error":
            raise RuntimeError(f"benchmark worker failed:\n{value}")
        return value

    def run(self) -> float:
        if self.process is None:
            return self._run()
        self.conn.send(True)
        return self._receive()

    def close(self) -> None:
        if self.process is not None:
            self.conn.send(False)
            self.process.join(timeout=60)


def compare(sides: dict, repeats: int) -> dict:
    """Seconds of each side's timed call, alternating the order every round; the sides are closed after."""
    times = {name: [] for name in sides}
    names = list(sides)
    try:
        for r in range(repeats):
            for name in (names if r % 2 == 0 else names[::-1]):
                times[name].append(sides[name].run())
    finally:
        for side in sides.values():
            side.close()
    return times


def report(times: dict, units_per_call: float, unit: str = "img/s", peer: str = "peer",
           flops_per_call: float | None = None, peak: float | None = None) -> dict:
    """Print best / median throughput of every side and its ratio to the peer; return the ratios.

    With ``flops_per_call`` and ``peak``: each side's model FLOPs utilisation in its best round, which bounds
    what any implementation of the same FLOPs can gain over it (at most 1 / MFU)."""
    best = {k: units_per_call / min(v) for k, v in times.items()}
    median = {k: units_per_call / statistics.median(v) for k, v in times.items()}
    width = max(len(k) for k in times)
    for k in times:
        util = f", MFU {flops_per_call / min(times[k]) / peak:.1%} (best)" if flops_per_call and peak else ""
        print(f"{k:>{width}}: {best[k]:10.2f} {unit} best, {median[k]:10.2f} {unit} median "
              f"({', '.join(f'{t:.2f}' for t in times[k])} s per call){util}")
    ratios = {}
    for k in times:
        if k != peer:
            ratios[k] = (best[k] / best[peer], median[k] / median[peer])
            print(f"ratio {k} / {peer}: {ratios[k][0]:.2f}x best, {ratios[k][1]:.2f}x median")
    return ratios


def setup_process(args) -> bool:
    """Threads and allocator of this process; returns whether the allocator is tuned here."""
    import torch

    torch.set_num_threads(args.threads)
    if args.processes == "separate":
        return False
    if not args.malloc_tune:
        os.environ["DIFFUNLEARN_MALLOC_TUNE"] = "0"
        return False
    from diffunlearn.speed import tune_cpu_allocator

    return args.device == "cpu" and tune_cpu_allocator()


def peak_flops(args) -> float | None:
    """The device's peak at the benchmark's precision, for the MFU columns (None: unknown device)."""
    from diffunlearn.flops import device_peak_flops, precision_of

    return device_peak_flops(args.device, precision_of("bf16" if args.precision == "bf16" else "no", args.device))


def describe_peak(peak: float | None, args) -> str:
    if not peak:
        return "peak unknown: no MFU"
    where = f"estimate for {args.threads} thread(s)" if args.device == "cpu" else "data sheet"
    return f"peak used for MFU: {peak / 1e12:.3g} TFLOP/s ({where})"


def describe_processes(args, tuned: bool) -> str:
    if args.processes == "separate":
        return ("each side in its own process: ours with its CPU allocator setting (glibc keeps freed memory), "
                "the peer with glibc's defaults")
    return f"both sides in one process, glibc malloc {'tuned for both' if tuned else 'defaults for both'}"


# ---------------------------------------------------------------- this benchmark's sides


def make_sampler(side: str, name: str, device: str, precision: str, batch: int, steps: int, fast: dict):
    import torch
    from diffusers import DDPMPipeline

    from diffunlearn.models import build_scheduler, build_unet
    from diffunlearn.sample import sample_images

    spec = MODELS[name]
    device = torch.device(device)
    unet = build_unet(model_config(name), spec["size"], spec["channels"], seed=0).to(device).eval()
    scheduler = build_scheduler(DIFFUSION)
    synchronize = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    autocast = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if precision == "bf16" else contextlib.nullcontext
    if side == "ours":
        def call(n_steps):
            with autocast():
                return sample_images(unet, scheduler, batch, num_inference_steps=n_steps, seed=0, batch_size=batch,
                                     device=device, **fast)
    else:
        pipe = DDPMPipeline(unet=unet, scheduler=scheduler)
        pipe.set_progress_bar_config(disable=True)

        def call(n_steps):
            with autocast():
                return pipe(batch_size=batch, num_inference_steps=n_steps, output_type="np",
                            generator=torch.Generator(device).manual_seed(0)).images

    def run():
        synchronize()
        start = time.perf_counter()
        call(steps)
        synchronize()
        return time.perf_counter() - start

    start = time.perf_counter()
    call(2)  # warm-up (and compilation)
    synchronize()
    return run, {"warmup_seconds": time.perf_counter() - start}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_arguments(parser)
    parser.add_argument("--batch", type=int, help="images per call (default: 128 for the 8x8 model, 16 for the 32x32 one)")
    parser.add_argument("--steps", type=int, help="inference steps of both (default: 100 / 10 / 1000 per model)")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None, help="default: the config's auto")
    parser.add_argument("--cuda-graphs", action=argparse.BooleanOptionalAction, default=None)
    parser.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None)
    args = parser.parse_args()

    from diffunlearn.flops import forward_flops
    from diffunlearn.models import build_unet, count_parameters
    from diffunlearn.speed import resolve_switch

    tuned = setup_process(args)
    peak = peak_flops(args)
    compile_unet = resolve_switch(args.compile, args.device)
    fast = dict(compile=compile_unet,
                cuda_graphs=compile_unet and resolve_switch(args.cuda_graphs, args.device),
                channels_last=resolve_switch(args.channels_last, args.device))
    print(f"machine: {machine(args.device)}")
    print(f"ours: sample_images, fast path {fast}; peer: DDPMPipeline; precision {args.precision}; "
          f"{describe_processes(args, tuned)}")

    for name in args.model:
        spec = MODELS[name]
        batch, steps = args.batch or spec["batch"], args.steps or spec["steps"]
        unet = build_unet(model_config(name), spec["size"], spec["channels"])
        params = count_parameters(unet)
        step_flops = forward_flops(unet, (batch, spec["channels"], spec["size"], spec["size"]))
        print(f"\n[{name}] {spec['channels']}x{spec['size']}x{spec['size']}, {params / 1e6:.2f}M parameters, "
              f"batch {batch}, {steps} of 1000 steps (stride {1000 // steps}), {args.repeats} interleaved rounds; "
              f"{step_flops / batch / 1e9:.4f} GFLOP per image per step")
        kwargs = dict(name=name, device=args.device, precision=args.precision, batch=batch, steps=steps, fast=fast)
        sides = {who: Side("bench_sample", "make_sampler", {"side": who, **kwargs}, separate=args.processes == "separate",
                           ours=who == "ours", threads=args.threads) for who in ("ours", "peer")}
        print("warm-up (2-step chains" + (", compiling" if fast["compile"] else "") + "): "
              + ", ".join(f"{k} {s.info['warmup_seconds']:.1f} s" for k, s in sides.items()))
        report(compare(sides, args.repeats), batch, flops_per_call=step_flops * steps, peak=peak)
    print(f"\n{describe_peak(peak, args)}")
    print(f"\nload average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
