"""The training loop shared by originals, oracles and the fine-tuning based unlearning methods.

Exact resumption without RNG state files: every random draw of step ``s`` (batch order, timesteps, noise,
flips, dropout) comes from generators seeded by ``(seed, s)``, so a run resumed at step ``s`` from its
checkpoint (weights, EMA, optimizer) continues bit-for-bit as the uninterrupted run would.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from diffunlearn.checkpoint import latest_valid_checkpoint, list_checkpoints, load_training_state, save_checkpoint

# An objective maps a step to the (data source, sign) pairs whose losses are summed at that step:
# +1 descends on the denoising loss, -1 ascends (gradient ascent on a forget set).
Objective = Callable[[int], list[tuple[str, float]]]


def descend_on(name: str) -> Objective:
    return lambda step: [(name, 1.0)]


def step_seed(seed: int, step: int, stream: int = 0) -> int:
    return (seed * 1_000_003 + step * 7919 + stream * 104_729) % (2**63 - 1)


def fingerprint(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def lr_at(step: int, base_lr: float, warmup: int) -> float:
    """Linear warmup to ``base_lr``, then constant (the DDPM paper's schedule)."""
    return base_lr * min(1.0, (step + 1) / warmup) if warmup > 0 else base_lr


def ema_decay_at(step: int, decay: float) -> float:
    """EMA decay with warm-up, so short runs are not dominated by the initialisation."""
    return min(decay, (1 + step) / (10 + step))


# Speed switches of the train config: they change how a step is computed, never what (results agree
# within float tolerance, tests/test_fastpath.py), so they are not part of a run's fingerprint.
FAST_PATH_KEYS = ("compile", "channels_last", "fused_adamw")


def fast_path(cfg: dict, device) -> dict:
    """The resolved switches: "auto" turns compile and channels_last on for CUDA only (on the CPU they
    cost more than they save) and fused AdamW on wherever torch has it (CPU and CUDA)."""
    from diffunlearn.sample import resolve_switch

    out = {key: resolve_switch(cfg.get(key, "auto"), device) for key in ("compile", "channels_last")}
    fused = cfg.get("fused_adamw", "auto")
    out["fused_adamw"] = str(device).split(":")[0] in ("cpu", "cuda") if fused in (None, "auto") else bool(fused)
    return out


class BatchSampler:
    """Batches as index tensors on the device: epoch-wise permutations seeded by (seed, epoch)."""

    def __init__(self, n: int, batch_size: int, seed: int, device):
        self.n, self.batch_size, self.seed, self.device = n, batch_size, seed, device
        self._epoch, self._perm = None, None

    def _perm_for(self, epoch: int):
        import torch

        if epoch != self._epoch:
            g = torch.Generator().manual_seed(step_seed(self.seed, epoch, stream=1))
            self._perm, self._epoch = torch.randperm(self.n, generator=g).to(self.device), epoch
        return self._perm

    def indices(self, micro_batch: int):
        import torch

        start = micro_batch * self.batch_size
        parts, remaining = [], self.batch_size
        while remaining:
            epoch, offset = divmod(start, self.n)
            take = min(remaining, self.n - offset)
            parts.append(self._perm_for(epoch)[offset : offset + take])
            start, remaining = start + take, remaining - take
        return parts[0] if len(parts) == 1 else torch.cat(parts)


@dataclass
class TrainRun:
    """Everything one training (or fine-tuning) run needs; pure data, no Snakemake."""

    out_dir: str
    sources: dict  # name -> uint8 NHWC array
    train_cfg: dict
    model_cfg: dict
    diffusion_cfg: dict
    seed: int
    device: str = "cpu"
    objective: Objective = field(default_factory=lambda: descend_on("train"))
    init_from: str | None = None  # a checkpoint to start from (fine-tuning); None = random init
    steps: int | None = None  # defaults to train_cfg["steps"]
    checkpoint_steps: list[int] | None = None  # defaults to every checkpoint_every steps and the last
    build_model: Callable | None = None  # (seed) -> UNet2DModel; defaults to models.build_unet
    extra_state: dict = field(default_factory=dict)  # recorded in every checkpoint's state.json
    init_weights: str = "raw"  # with init_from: start from its "raw" or its "ema" weights
    prepare: Callable | None = None  # (raw, ema) -> None, applied once to a fresh start (e.g. pruning)
    post_step_factory: Callable | None = None  # (raw) -> post_step(raw, ema), run after every optimizer step


def _match_state_layout(optimizer) -> None:
    """Give loaded optimizer state tensors their parameter's memory format (checkpoints store them contiguous)."""
    import torch

    for group in optimizer.param_groups:
        for p in group["params"]:
            for name, value in optimizer.state.get(p, {}).items():
                if torch.is_tensor(value) and value.shape == p.shape and value.stride() != p.stride():
                    optimizer.state[p][name] = torch.empty_like(p, dtype=value.dtype).copy_(value)


def _resume_dir(out_dir: Path) -> Path:
    return out_dir / "resume"


def run_training(run: TrainRun, log: Callable[[str], None] = print) -> dict:
    """Train, checkpointing atomically; resume from the newest valid checkpoint of an interrupted run.

    Checkpoints are written to ``<out_dir>/resume/`` while the run is going and moved to
    ``<out_dir>/checkpoint-<step>`` when it finishes, so a workflow manager that deletes the declared
    outputs of a failed job never deletes the state it resumes from.
    """
    import torch
    from accelerate import Accelerator
    from tqdm import tqdm

    from diffunlearn.checkpoint import load_ema_unet  # noqa: F401  (import check for callers)
    from diffunlearn.data import to_model_space
    from diffunlearn.models import build_scheduler, build_unet

    cfg = run.train_cfg
    total_steps = run.steps or cfg["steps"]
    if run.checkpoint_steps is None:
        from diffunlearn.config import checkpoint_steps

        ckpt_steps = checkpoint_steps({**cfg, "steps": total_steps})
    else:
        ckpt_steps = sorted(run.checkpoint_steps)
    out_dir = Path(run.out_dir)
    resume_dir = _resume_dir(out_dir)
    resume_dir.mkdir(parents=True, exist_ok=True)

    fp = fingerprint({
        "train": {k: v for k, v in cfg.items() if k not in FAST_PATH_KEYS}, "model": run.model_cfg, "diffusion": run.diffusion_cfg, "seed": run.seed, "steps": total_steps,
        "init_from": run.init_from, "extra": run.extra_state,
        "sources": {k: [list(v.shape), hashlib.sha256(np.ascontiguousarray(v).tobytes()).hexdigest()[:16]] for k, v in run.sources.items()},
    })

    if cfg["mixed_precision"] == "fp16" and not str(run.device).startswith("cuda"):
        raise ValueError("train.mixed_precision: fp16 needs a CUDA device; use bf16 or no on CPU")
    accelerator = Accelerator(
        mixed_precision=cfg["mixed_precision"], cpu=str(run.device) == "cpu", gradient_accumulation_steps=1,
    )
    device = accelerator.device
    # Data parallel (train_data_parallel): every process takes its slice of each global batch, DDP averages
    # the gradients, so a step sees the same batch_size examples as one process would; rank 0 writes.
    world, rank, is_main = accelerator.num_processes, accelerator.process_index, accelerator.is_main_process
    if world > 1:
        if cfg["batch_size"] % world:
            raise ValueError(f"train.batch_size {cfg['batch_size']} is not divisible by {world} processes")
        if not is_main:
            log = lambda msg: None  # noqa: E731  (one log: the main process's)
    if device.type == "cpu":
        from diffunlearn.sample import tune_cpu_allocator

        tune_cpu_allocator()  # reuse freed activation memory instead of page-faulting it in every step

    sample_size, channels = next(iter(run.sources.values())).shape[1], next(iter(run.sources.values())).shape[3]
    make = run.build_model or (lambda seed: build_unet(run.model_cfg, sample_size, channels, seed=seed))
    raw = make(run.seed)
    ema = make(run.seed)
    scheduler = build_scheduler(run.diffusion_cfg)
    fast = fast_path(cfg, device)
    if fast["channels_last"]:
        # NHWC weights (and so activations) for the trained model; the EMA copy stays contiguous, as saved.
        raw.to(memory_format=torch.channels_last)
    log("fast path: " + ", ".join(f"{k}={'on' if v else 'off'}" for k, v in fast.items()))

    opt_cls = torch.optim.AdamW
    opt_kwargs = {}
    if cfg["use_8bit_adam"]:
        try:
            import bitsandbytes as bnb
        except ImportError as exc:
            raise ImportError("train.use_8bit_adam is true but bitsandbytes is not installed (pip install bitsandbytes)") from exc
        opt_cls = bnb.optim.AdamW8bit
    elif fast["fused_adamw"]:
        opt_kwargs["fused"] = True

    start_step, state = 0, {}
    resume_from = latest_valid_checkpoint(resume_dir, fingerprint=fp, log=log)
    init_opt_state = None
    if resume_from is not None:
        init_opt_state, state = load_training_state(resume_from, raw, ema)
        start_step = state["step"]
        log(f"resuming from {resume_from} (step {start_step})")
    else:
        if run.init_from is not None:
            # Fine-tuning starts from another run's weights; its optimizer state is not carried over.
            load_training_state(run.init_from, raw, ema)
            if run.init_weights == "ema":
                raw.load_state_dict(ema.state_dict())
            log(f"initialised from {run.init_from} ({run.init_weights} weights)")
        if run.prepare is not None:
            run.prepare(raw, ema)
        if run.init_from is None or run.init_weights == "ema" or run.prepare is not None:
            ema.load_state_dict(raw.state_dict())
    post_step = run.post_step_factory(raw) if run.post_step_factory else None

    optimizer = opt_cls(raw.parameters(), lr=cfg["lr"], betas=tuple(cfg["adam_betas"]), weight_decay=cfg["weight_decay"], **opt_kwargs)
    if init_opt_state is not None:
        optimizer.load_state_dict(init_opt_state)
        if fast["channels_last"]:
            _match_state_layout(optimizer)
    raw, optimizer = accelerator.prepare(raw, optimizer)
    if state.get("scaler") and accelerator.scaler is not None:
        accelerator.scaler.load_state_dict(state["scaler"])
    ema.to(device).requires_grad_(False).eval()
    raw.train()
    forward = raw
    if fast["compile"]:
        from diffunlearn.sample import compile_module

        forward = compile_module(raw)

    data = {k: to_model_space(v).to(device) for k, v in run.sources.items()}
    samplers = {k: BatchSampler(len(v), cfg["batch_size"], run.seed, device) for k, v in data.items()}
    alphas_cumprod = scheduler.alphas_cumprod.to(device)
    T = scheduler.config.num_train_timesteps
    accum = cfg["gradient_accumulation_steps"]
    ema_params = [p for p in ema.parameters()]
    raw_params_module = accelerator.unwrap_model(raw)
    raw_params = list(raw_params_module.parameters())
    # Buffers (none in UNet2DModel today) would be copied at save time.

    from diffunlearn.flops import device_peak_flops, precision_of, train_step_flops

    # Model FLOPs of one micro-batch (forward + backward), counted once on a meta copy of the model.
    try:
        micro_flops = train_step_flops(raw_params_module, (cfg["batch_size"], channels, sample_size, sample_size))
    except Exception as exc:  # a model the meta-device counter cannot run: report no FLOPs, train anyway
        log(f"warning: FLOPs not counted ({type(exc).__name__}: {exc})")
        micro_flops = 0
    peak = device_peak_flops(device, precision_of(cfg["mixed_precision"], device))
    peak = peak * world if peak else peak  # the FLOPs count the global batch, on world devices
    flops_before = float(state.get("flops_done", 0.0))
    step_seconds_before = float(state.get("step_seconds", 0.0))
    flops_done, step_seconds = 0.0, 0.0

    wall_before = float(state.get("wall_seconds", 0.0))
    examples_seen = int(state.get("examples_seen", 0))
    loss_log = list(state.get("loss_log", []))
    t0 = time.time()
    loss_acc = torch.zeros((), device=device)
    loss_count = 0
    use_dropout = run.model_cfg.get("dropout", 0.0) > 0

    # This process's rows of every global batch; the random draws are made for the whole global batch and
    # sliced, so each example gets the same flip, timestep and noise whatever the number of processes.
    local_batch = cfg["batch_size"] // world
    part = slice(rank * local_batch, (rank + 1) * local_batch)

    def denoising_loss(x0, g, n_global):
        t = torch.randint(0, T, (n_global,), device=device, generator=g)[part]
        noise = torch.randn((n_global, *x0.shape[1:]), device=device, generator=g)[part]
        a = alphas_cumprod[t].view(-1, 1, 1, 1)
        x_t = a.sqrt() * x0 + (1 - a).sqrt() * noise
        with accelerator.autocast():
            pred = forward(x_t, t).sample
        return torch.nn.functional.mse_loss(pred.float(), noise)

    progress = tqdm(range(start_step, total_steps), initial=start_step, total=total_steps, mininterval=5,
                    desc=out_dir.name, file=None, dynamic_ncols=False, ascii=True)
    segment_start = time.perf_counter()  # the training steps' own time, checkpoint writing excluded
    for step in progress:
        lr = lr_at(step, cfg["lr"], cfg["warmup_steps"])
        for group in optimizer.param_groups:
            group["lr"] = lr
        g = torch.Generator(device=device).manual_seed(step_seed(run.seed, step))
        if use_dropout:
            torch.manual_seed(step_seed(run.seed, step, stream=2))
        for name, sign in run.objective(step):
            for a in range(accum):
                idx = samplers[name].indices(step * accum + a)
                n_global = idx.shape[0]
                x0 = data[name][idx[part]] if world > 1 else data[name][idx]
                if cfg["random_flip"]:
                    flip = torch.rand(n_global, device=device, generator=g)[part] < 0.5
                    x0 = torch.where(flip.view(-1, 1, 1, 1), x0.flip(-1), x0)
                loss = denoising_loss(x0, g, n_global)
                accelerator.backward(sign * loss / accum)
                loss_acc += loss.detach() / accum
                examples_seen += n_global
                flops_done += micro_flops
            loss_count += 1
        if cfg["grad_clip"]:
            accelerator.clip_grad_norm_(raw.parameters(), cfg["grad_clip"])
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        with torch.no_grad():
            if post_step is not None:
                post_step(raw_params_module, ema)
            torch._foreach_lerp_(ema_params, raw_params, 1.0 - ema_decay_at(step, cfg["ema_decay"]))
        done = step + 1
        if done % cfg["log_every"] == 0 or done == total_steps:
            if world > 1:
                loss_acc = accelerator.reduce(loss_acc, reduction="mean")  # every process's loss, averaged
            mean_loss = (loss_acc / max(loss_count, 1)).item()  # the only host sync, every log_every steps
            loss_log.append([done, mean_loss])
            log(f"step {done}/{total_steps} loss {mean_loss:.5f} lr {lr:.2e}")
            loss_acc.zero_()
            loss_count = 0
        if done in ckpt_steps:
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            step_seconds += time.perf_counter() - segment_start
            wall = wall_before + time.time() - t0
            seconds, total_flops = step_seconds_before + step_seconds, flops_before + flops_done
            achieved = total_flops / seconds if seconds > 0 and total_flops > 0 else None
            st = {
                "step": done, "fingerprint": fp, "wall_seconds": wall, "examples_seen": examples_seen,
                "loss_log": loss_log, "device": str(device), "seed": run.seed, "total_steps": total_steps,
                "mixed_precision": cfg["mixed_precision"],
                # Model FLOPs (forward + backward, torch's flop counter) and what the steps achieved, checkpoint
                # writing excluded; mfu against the device's peak at this precision (null where unknown).
                "flops_per_micro_batch": micro_flops or None,
                "flops_per_step": micro_flops * accum * len(run.objective(done - 1)) or None,
                "flops_done": total_flops, "step_seconds": seconds,
                "achieved_tflops": achieved / 1e12 if achieved else None,
                "peak_tflops": peak / 1e12 if peak else None,
                "mfu": achieved / peak if achieved and peak else None,
                "fast_path": fast, **run.extra_state,
            }
            if world > 1:
                st["num_processes"] = world
            if accelerator.scaler is not None:
                st["scaler"] = accelerator.scaler.state_dict()
            if is_main:
                save_checkpoint(resume_dir / f"checkpoint-{done}", ema_unet=ema,
                                raw_unet=accelerator.unwrap_model(raw), scheduler=scheduler,
                                optimizer_state=optimizer.state_dict(), state=st)
            log(f"checkpoint {done} written ({wall:.1f} s of training so far"
                + (f", {st['achieved_tflops']:.3g} TFLOP/s" if achieved else "")
                + (f", MFU {st['mfu']:.1%}" if st["mfu"] else "") + ")")
            segment_start = time.perf_counter()
    progress.close()

    # Publish: move every checkpoint out of resume/ into the declared place, then drop resume/.
    if is_main:
        for step_no, path in list_checkpoints(resume_dir):
            if step_no in ckpt_steps:
                target = out_dir / path.name
                if target.exists():
                    shutil.rmtree(target)
                os.replace(path, target)
        shutil.rmtree(resume_dir, ignore_errors=True)
    if world > 1:
        accelerator.wait_for_everyone()  # the others read the published state below
    final = out_dir / f"checkpoint-{total_steps}"
    summary = json.loads((final / "training_state" / "state.json").read_text())
    summary.pop("optimizer", None)
    summary.pop("loss_log", None)
    return summary


def _free_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _data_parallel_worker(rank: int, run: TrainRun, world: int, port: int, log) -> None:
    """One process of train_data_parallel: the torch.distributed environment accelerate reads, then run_training."""
    import torch

    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), LOCAL_WORLD_SIZE=str(world),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    if str(run.device) == "cpu":
        torch.set_num_threads(max(1, torch.get_num_threads() // world))  # the job's threads, shared
    from accelerate.state import AcceleratorState, PartialState

    AcceleratorState._reset_state(True)  # a state inherited from the parent would say "not distributed"
    PartialState._reset_state()
    try:
        run_training(run, log=log)
    finally:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def train_data_parallel(run: TrainRun, num_processes: int, log: Callable[[str], None] = print) -> dict:
    """``run_training`` on ``num_processes`` local processes, data parallel (train.num_processes).

    Each process is forked from this one (as accelerate's notebook_launcher does; this process must not
    have initialised CUDA) with the torch.distributed environment set, so that accelerate's Accelerator
    sets up DDP: gloo on CPU, NCCL on GPUs (process k on cuda:k of the visible devices). Every process
    takes batch_size / N rows of each global batch, with the same random draws as one process would make,
    and DDP averages the gradients, so a step still sees train.batch_size examples. Only the main process
    writes checkpoints (atomically, as run_training always does); the layout is the same as with one
    process. Returns the summary of the final checkpoint. A failing process fails the call.
    """
    if num_processes <= 1:
        return run_training(run, log=log)
    import sys

    import torch
    import torch.multiprocessing as mp

    if torch.cuda.is_initialized():
        raise RuntimeError("train_data_parallel forks its processes: CUDA must not be initialised in this one "
                           "(set PYTORCH_NVML_BASED_CUDA_CHECK=1 before torch.cuda.is_available())")
    batch_size = run.train_cfg["batch_size"]
    if batch_size % num_processes:
        raise ValueError(f"train.batch_size {batch_size} is not divisible by train.num_processes {num_processes}")
    log(f"data parallel: {num_processes} processes, {batch_size // num_processes} examples each per batch")
    sys.stdout.flush()
    sys.stderr.flush()
    mp.start_processes(_data_parallel_worker, args=(run, num_processes, _free_port(), log), nprocs=num_processes,
                       join=True, start_method="fork")
    total_steps = run.steps or run.train_cfg["steps"]
    summary = json.loads((Path(run.out_dir) / f"checkpoint-{total_steps}" / "training_state" / "state.json").read_text())
    summary.pop("optimizer", None)
    summary.pop("loss_log", None)
    return summary
