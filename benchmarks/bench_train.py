"""Training: our loop (``diffunlearn.train.run_training``) against a diffusers-example-style loop.

    python benchmarks/bench_train.py                          # both models, CPU, 1 thread, a few steps
    python benchmarks/bench_train.py --steps 20 --repeats 5
    python benchmarks/bench_train.py --model cifar10 --device cuda --precision bf16 --batch 128 --warmup 30 --steps 100

The peer is the loop of diffusers' examples/unconditional_image_generation/train_unconditional.py: a
torch DataLoader over per-image PIL images with the example's transforms (Resize, CenterCrop,
RandomHorizontalFlip when flipping, ToTensor, Normalize), shuffled, in the main process (the example's
default of 0 workers); accelerate's Accelerator (mixed precision as ``--precision``); AdamW with its
defaults; a cosine schedule with warm-up; ``noise_scheduler.add_noise``; ``accelerator.clip_grad_norm_``;
diffusers' ``EMAModel`` (with its warm-up, default non-foreach update); ``loss.item()`` every step.
Ours is ``run_training`` as the pipeline runs it (data held on the device, flips there, loss read every
``log_every`` steps, fused AdamW, foreach EMA, the config's fast path: compile and channels_last on
CUDA). Both train the same UNet (same initial weights), the same batch size, data, learning rate,
gradient clipping and EMA decay, on the same device and precision.

Processes: as in bench_sample.py (``--processes separate``, the default: each side in its own worker
process, ours with its CPU allocator setting, the peer with glibc's defaults; ``same``: one process).

Timing excludes start-up and checkpoint writing: ours writes its one checkpoint after the last step,
and its steps are timed by the timestamps of its loss log (log_every divides the warm-up and the
timed steps); the peer is timed over the same steps. ``--warmup`` steps of each are not timed
(compilation happens there). ``--repeats`` rounds alternate the two (ours first in even rounds);
img/s is reported from the best and from the median round, with model FLOPs utilisation (FLOPs of a
step from torch's flop counter, ``diffunlearn.flops``) against the device's peak (the CPU's is an
estimate from its clock and vector width).
"""
from __future__ import annotations

import argparse
import contextlib
import math
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_sample import (  # noqa: E402
    MODELS,
    Side,
    add_common_arguments,
    compare,
    describe_processes,
    machine,
    model_config,
    setup_process,
)

DEFAULT_BATCH = {"default": 64, "32px": 16, "cifar10": 128}
DEFAULT_STEPS = {"default": (4, 20), "32px": (2, 4), "cifar10": (30, 100)}  # (warm-up, timed) per round


def synthetic_images(n: int, size: int, channels: int, seed: int = 0):
    """uint8 NHWC images: the digits (8x8x1, the embedded default's data) or smooth random colour images."""
    import numpy as np

    from diffunlearn.data import load_digits_source

    if size == 8 and channels == 1:
        return load_digits_source()[0][:n]
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, size=(n, size // 4, size // 4, channels), dtype=np.uint8)
    return coarse.repeat(4, axis=1).repeat(4, axis=2)


def train_cfg(batch: int, precision: str, flip: bool, log_every: int, switches: dict) -> dict:
    from diffunlearn.config import validate_config

    cfg = validate_config({"train": {"batch_size": batch, "lr": 1e-4, "warmup_steps": 10, "ema_decay": 0.9999,
                                     "grad_clip": 1.0, "mixed_precision": "bf16" if precision == "bf16" else "no",
                                     "random_flip": flip, "log_every": log_every, "steps": 1, "checkpoint_every": 1,
                                     **switches}})
    return cfg["train"]


def ours_round(images, model_cfg, cfg, warmup, steps, device) -> float:
    """Seconds of ``steps`` steps of run_training after ``warmup`` steps (by its loss-log timestamps)."""
    from diffunlearn.train import TrainRun, run_training

    stamps = {}

    def log(message):
        if message.startswith("step "):
            stamps[int(message.split()[1].split("/")[0])] = time.perf_counter()

    diffusion = {"num_train_timesteps": 1000, "beta_schedule": "linear", "beta_start": 1e-4, "beta_end": 0.02}
    with tempfile.TemporaryDirectory() as out:
        run = TrainRun(out_dir=out, sources={"train": images}, train_cfg=cfg, model_cfg=model_cfg, diffusion_cfg=diffusion,
                       seed=0, device=str(device), steps=warmup + steps, checkpoint_steps=[warmup + steps])
        run_training(run, log=log)
    return stamps[warmup + steps] - stamps[warmup]


def peer_round(images, model_cfg, cfg, warmup, steps, device) -> float:
    """Seconds of ``steps`` steps of the diffusers-example-style loop after ``warmup`` steps."""
    import torch
    import torch.nn.functional as F
    from accelerate import Accelerator
    from diffusers import DDPMScheduler, UNet2DModel
    from diffusers.optimization import get_scheduler
    from diffusers.training_utils import EMAModel
    from PIL import Image
    from torchvision import transforms

    from diffunlearn.models import build_unet

    size, channels = images.shape[1], images.shape[3]
    augmentations = transforms.Compose([
        transforms.Resize(size, interpolation=transforms.InterpolationMode.BILINEAR),
        transforms.CenterCrop(size),
        transforms.RandomHorizontalFlip() if cfg["random_flip"] else transforms.Lambda(lambda x: x),
        transforms.ToTensor(),
        transforms.Normalize([0.5], [0.5]),
    ])

    class Images(torch.utils.data.Dataset):
        def __init__(self, array):
            self.pil = [Image.fromarray(a[..., 0] if channels == 1 else a) for a in array]

        def __len__(self):
            return len(self.pil)

        def __getitem__(self, i):
            return {"input": augmentations(self.pil[i])}

    accelerator = Accelerator(mixed_precision=cfg["mixed_precision"], cpu=device.type == "cpu")
    model = build_unet(model_cfg, size, channels, seed=0)
    noise_scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear")
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg["lr"], betas=tuple(cfg["adam_betas"]),
                                  weight_decay=cfg["weight_decay"], eps=1e-8)
    loader = torch.utils.data.DataLoader(Images(images), batch_size=cfg["batch_size"], shuffle=True, num_workers=0,
                                         drop_last=True)
    lr_scheduler = get_scheduler("cosine", optimizer=optimizer, num_warmup_steps=cfg["warmup_steps"],
                                 num_training_steps=warmup + steps)
    model, optimizer, loader, lr_scheduler = accelerator.prepare(model, optimizer, loader, lr_scheduler)
    ema = EMAModel(model.parameters(), decay=cfg["ema_decay"], use_ema_warmup=True, inv_gamma=1.0, power=3 / 4,
                   model_cls=UNet2DModel, model_config=model.config)
    ema.to(accelerator.device)
    stamps, step = {}, 0
    model.train()
    while step < warmup + steps:
        for batch in loader:
            clean = batch["input"]
            noise = torch.randn(clean.shape, dtype=clean.dtype, device=clean.device)
            timesteps = torch.randint(0, noise_scheduler.config.num_train_timesteps, (clean.shape[0],), device=clean.device).long()
            noisy = noise_scheduler.add_noise(clean, noise, timesteps)
            with accelerator.accumulate(model):
                model_output = model(noisy, timesteps).sample
                loss = F.mse_loss(model_output.float(), noise.float())
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(model.parameters(), cfg["grad_clip"])
                optimizer.step()
                lr_scheduler.step()
                optimizer.zero_grad()
            if accelerator.sync_gradients:
                ema.step(model.parameters())
            logs = {"loss": loss.detach().item(), "lr": lr_scheduler.get_last_lr()[0], "step": step}  # noqa: F841
            step += 1
            stamps[step] = time.perf_counter()
            if step == warmup + steps:
                break
    return stamps[warmup + steps] - stamps[warmup]


def make_trainer(side: str, name: str, device: str, batch: int, warmup: int, steps: int, flip: bool, precision: str,
                 switches: dict):
    """A side of the benchmark: each run() is a fresh training run; it returns the seconds of its timed steps."""
    import torch

    spec = MODELS[name]
    model_cfg = model_config(name)
    images = synthetic_images(max(1024, 4 * batch), spec["size"], spec["channels"])
    cfg = train_cfg(batch, precision, flip, math.gcd(warmup, steps), switches)
    fn = ours_round if side == "ours" else peer_round

    def run():
        with contextlib.redirect_stderr(open(os.devnull, "w")):  # progress bars
            return fn(images, model_cfg, cfg, warmup, steps, torch.device(device))

    return run, {"images": len(images)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_arguments(parser)
    parser.add_argument("--batch", type=int, help="default: 64 (8x8 model), 16 (32x32 model), 128 (cifar10)")
    parser.add_argument("--warmup", type=int, help="untimed steps per round (default 4 / 2 / 30)")
    parser.add_argument("--steps", type=int, help="timed steps per round (default 20 / 4 / 100)")
    parser.add_argument("--flip", action=argparse.BooleanOptionalAction, default=None,
                        help="random horizontal flips (default: off for the digits, on for 32x32 colour images)")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None, help="ours; default: the config's auto")
    parser.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None)
    parser.add_argument("--fused-adamw", action=argparse.BooleanOptionalAction, default=None)
    args = parser.parse_args()

    import torch

    from diffunlearn.flops import device_peak_flops, precision_of, train_step_flops
    from diffunlearn.models import build_unet, count_parameters
    from diffunlearn.speed import fast_path

    tuned = setup_process(args)
    device = torch.device(args.device)
    switches = {k: v for k, v in (("compile", args.compile), ("channels_last", args.channels_last),
                                  ("fused_adamw", args.fused_adamw)) if v is not None}
    print(f"machine: {machine(args.device)}")
    print(f"ours: run_training, fast path {fast_path(switches, device)}; peer: diffusers-example loop; "
          f"precision {args.precision}; {describe_processes(args, tuned)}")
    peak = device_peak_flops(device, precision_of("bf16" if args.precision == "bf16" else "no", device))

    for name in args.model:
        spec = MODELS[name]
        batch = args.batch or DEFAULT_BATCH[name]
        warmup, steps = args.warmup or DEFAULT_STEPS[name][0], args.steps or DEFAULT_STEPS[name][1]
        flip = (spec["channels"] == 3) if args.flip is None else args.flip
        unet = build_unet(model_config(name), spec["size"], spec["channels"], seed=0)
        flops_per_image = train_step_flops(unet, (batch, spec["channels"], spec["size"], spec["size"])) / batch
        kwargs = dict(name=name, device=args.device, batch=batch, warmup=warmup, steps=steps, flip=flip,
                      precision=args.precision, switches=switches)
        sides = {who: Side("bench_train", "make_trainer", {"side": who, **kwargs}, separate=args.processes == "separate",
                           ours=who == "ours", threads=args.threads) for who in ("ours", "peer")}
        print(f"\n[{name}] {spec['channels']}x{spec['size']}x{spec['size']}, {count_parameters(unet) / 1e6:.2f}M parameters, "
              f"batch {batch}, flips {'on' if flip else 'off'}, {sides['ours'].info['images']} images; "
              f"{flops_per_image / 1e9:.3f} GFLOP per image per step (forward + backward); per round {warmup} untimed + "
              f"{steps} timed steps, {args.repeats} interleaved rounds")
        times = compare(sides, args.repeats)
        for who, ts in times.items():
            best, median = steps * batch / min(ts), steps * batch / statistics.median(ts)
            util = f", MFU {flops_per_image * best / peak:.1%} (best)" if peak else ""
            print(f"{who:>5}: {best:9.1f} img/s best, {median:9.1f} img/s median "
                  f"({', '.join(f'{t / steps * 1e3:.0f}' for t in ts)} ms per step){util}")
        ratio_best = min(times["peer"]) / min(times["ours"])
        ratio_median = statistics.median(times["peer"]) / statistics.median(times["ours"])
        print(f"ratio ours / diffusers-style loop: {ratio_best:.2f}x best, {ratio_median:.2f}x median")
    if peak:
        where = f"estimate for {args.threads} thread(s)" if device.type == "cpu" else "data sheet"
        print(f"\npeak used for MFU: {peak / 1e12:.3g} TFLOP/s ({where})")
    print(f"load average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
