"""The training engine shared by originals, oracles, attribution models and the fine-tuning based unlearning methods.

A :class:`Trainer` is a few parts with one job each: accelerator and precision set-up
(:func:`setup_accelerator`), optimizer and learning-rate / EMA schedule (:func:`build_optimizer`,
:func:`lr_at`, :func:`ema_decay_at`), restore-or-initialise (:func:`restore_or_init`), one training step
(:meth:`Trainer.step`), FLOP / MFU metering (:class:`FlopMeter`), checkpoint records
(:func:`checkpoint_record`) and publishing (:func:`publish_checkpoints`). What a step optimises comes from
:mod:`diffunlearn.objectives`: the schedule of (source, sign) terms, the loss, the timestep sampler and the
weighting (docs/design.md, "Training engine").

Exact resumption without RNG state files: every random draw of step ``s`` (batch order, timesteps, noise,
flips, dropout) comes from generators seeded by ``(seed, s)``, so a run resumed at step ``s`` from its
checkpoint (weights, EMA, optimizer, the timestep sampler's state) continues bit-for-bit as the
uninterrupted run would.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from diffunlearn.checkpoint import latest_valid_checkpoint, list_checkpoints, load_training_state, save_checkpoint
from diffunlearn.objectives import Batch, DenoisingLoss, Schedule, StepContext, UniformTimesteps, descend_on
from diffunlearn.speed import FAST_PATH_KEYS, fast_path

# The (source, sign) schedule of a run: +1 descends on the denoising loss, -1 ascends (gradient ascent on a forget set).
Objective = Schedule

__all__ = ["BatchSampler", "Objective", "TrainRun", "Trainer", "descend_on",
           "cost_record", "fine_tune_config", "run_training", "train_data_parallel"]


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


def fine_tune_config(train_cfg: dict, hp: dict) -> dict:
    """The train config of a fine-tuning run (unlearning methods, sparsified attribution models): the
    method's steps, learning rate, batch, EMA decay and clipping over the training config, no warm-up, one
    checkpoint at the end."""
    return {**train_cfg, "steps": hp["steps"], "lr": hp["lr"], "batch_size": hp["batch_size"],
            "ema_decay": hp["ema_decay"], "grad_clip": hp["grad_clip"], "warmup_steps": 0,
            "checkpoint_every": hp["steps"], "log_every": min(train_cfg["log_every"], hp["steps"])}


def cost_record(method: str, summary: dict, **extra) -> dict:
    """A model's cost.json: the method, the steps, examples seen, training seconds, device and model FLOPs per
    step of its run's summary (:func:`run_training`), and ``extra`` fields (subset, source, pruning, ...)."""
    return {"method": method, "steps": summary["step"], "examples_seen": summary["examples_seen"],
            "wall_seconds": summary["wall_seconds"], "device": summary["device"],
            "flops_per_step": summary.get("flops_per_step"), **extra}


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
    # The pluggable pieces of a step (diffunlearn.objectives); None: the DDPM objective, uniform t, no weights.
    loss: Callable | None = None  # Loss: (ctx, batch, generator) -> scalar
    timesteps: Callable | None = None  # (scheduler) -> TimestepSampler
    weighting: Callable | None = None  # (scheduler) -> tensor [T] of per-timestep weights, or None
    reference: str | None = None  # a checkpoint whose EMA weights are the frozen reference model ("init": init_from's)

    def __post_init__(self):
        """train.timesteps / train.loss_weighting (diffunlearn.weighting) fill the timesteps / weighting hooks the
        caller left empty; uniform schemes fill none (the engine's default path, numbers as before)."""
        from diffunlearn.weighting import engine_hooks

        for name, hook in engine_hooks(self.train_cfg).items():
            if getattr(self, name) is None:
                setattr(self, name, hook)


def setup_accelerator(cfg: dict, device_name: str):
    """The accelerate ``Accelerator`` of a run (precision, CPU or GPU, data parallel processes)."""
    from accelerate import Accelerator

    if cfg["mixed_precision"] == "fp16" and not str(device_name).startswith("cuda"):
        raise ValueError("train.mixed_precision: fp16 needs a CUDA device; use bf16 or no on CPU")
    accelerator = Accelerator(mixed_precision=cfg["mixed_precision"], cpu=str(device_name) == "cpu",
                              gradient_accumulation_steps=1)
    if accelerator.num_processes > 1 and cfg["batch_size"] % accelerator.num_processes:
        raise ValueError(f"train.batch_size {cfg['batch_size']} is not divisible by {accelerator.num_processes} processes")
    if accelerator.device.type == "cpu":
        from diffunlearn.speed import tune_cpu_allocator

        tune_cpu_allocator()  # reuse freed activation memory instead of page-faulting it in every step
    return accelerator


def build_optimizer(params, cfg: dict, fast: dict):
    """AdamW (8-bit with bitsandbytes, or torch's fused kernel where the fast path says so)."""
    import torch

    opt_cls, opt_kwargs = torch.optim.AdamW, {}
    if cfg["use_8bit_adam"]:
        try:
            import bitsandbytes as bnb
        except ImportError as exc:
            raise ImportError("train.use_8bit_adam is true but bitsandbytes is not installed (pip install bitsandbytes)") from exc
        opt_cls = bnb.optim.AdamW8bit
    elif fast["fused_adamw"]:
        opt_kwargs["fused"] = True
    return opt_cls(params, lr=cfg["lr"], betas=tuple(cfg["adam_betas"]), weight_decay=cfg["weight_decay"], **opt_kwargs)


def _match_state_layout(optimizer) -> None:
    """Give loaded optimizer state tensors their parameter's memory format (checkpoints store them contiguous)."""
    import torch

    for group in optimizer.param_groups:
        for p in group["params"]:
            for name, value in optimizer.state.get(p, {}).items():
                if torch.is_tensor(value) and value.shape == p.shape and value.stride() != p.stride():
                    optimizer.state[p][name] = torch.empty_like(p, dtype=value.dtype).copy_(value)


def run_fingerprint(run: TrainRun, total_steps: int) -> str:
    """What a checkpoint must have been trained with to be resumed from (speed switches excluded)."""
    return fingerprint({
        "train": {k: v for k, v in run.train_cfg.items() if k not in FAST_PATH_KEYS}, "model": run.model_cfg,
        "diffusion": run.diffusion_cfg, "seed": run.seed, "steps": total_steps, "init_from": run.init_from,
        "extra": run.extra_state,
        "sources": {k: [list(v.shape), hashlib.sha256(np.ascontiguousarray(v).tobytes()).hexdigest()[:16]]
                    for k, v in run.sources.items()},
    })


def restore_or_init(run: TrainRun, raw, ema, resume_dir: Path, fp: str, log) -> tuple[dict | None, dict]:
    """Resume from the newest valid checkpoint of this run, or initialise (from ``init_from``, then ``prepare``).

    Returns the optimizer state to load (None on a fresh start) and the checkpoint's state.json ({} fresh)."""
    resume_from = latest_valid_checkpoint(resume_dir, fingerprint=fp, log=log)
    if resume_from is not None:
        opt_state, state = load_training_state(resume_from, raw, ema)
        log(f"resuming from {resume_from} (step {state['step']})")
        return opt_state, state
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
    return None, {}


class FlopMeter:
    """Model FLOPs done (torch's counter on a meta copy, diffunlearn.flops) and the steps' own seconds.

    The time between :meth:`pause` and :meth:`resume` (checkpoint writing) is not counted."""

    def __init__(self, model, batch_shape, mixed_precision: str, device, world: int, state: dict, log):
        from diffunlearn.flops import device_peak_flops, precision_of, train_step_flops

        try:
            self.micro_flops = train_step_flops(model, batch_shape)
        except Exception as exc:  # a model the meta-device counter cannot run: report no FLOPs, train anyway
            log(f"warning: FLOPs not counted ({type(exc).__name__}: {exc})")
            self.micro_flops = 0
        peak = device_peak_flops(device, precision_of(mixed_precision, device))
        self.peak = peak * world if peak else peak  # the FLOPs count the global batch, on world devices
        self.flops = float(state.get("flops_done", 0.0))
        self.seconds = float(state.get("step_seconds", 0.0))
        self.device = device
        self.resume()

    def micro_batch(self) -> None:
        self.flops += self.micro_flops

    def resume(self) -> None:
        self._start = time.perf_counter()

    def pause(self) -> None:
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.seconds += time.perf_counter() - self._start

    def record(self, micro_batches_per_step: int) -> dict:
        """The state.json fields: FLOPs per micro-batch and step, FLOPs done, seconds, TFLOP/s, MFU (null where unknown)."""
        achieved = self.flops / self.seconds if self.seconds > 0 and self.flops > 0 else None
        return {"flops_per_micro_batch": self.micro_flops or None,
                "flops_per_step": self.micro_flops * micro_batches_per_step or None,
                "flops_done": self.flops, "step_seconds": self.seconds,
                "achieved_tflops": achieved / 1e12 if achieved else None,
                "peak_tflops": self.peak / 1e12 if self.peak else None,
                "mfu": achieved / self.peak if achieved and self.peak else None}


def checkpoint_record(trainer: Trainer, done: int, wall: float) -> dict:
    """The state.json of the checkpoint after ``done`` steps (the optimizer's hyper-parameters are added on save)."""
    run, cfg = trainer.run, trainer.cfg
    accum = cfg["gradient_accumulation_steps"]
    st = {"step": done, "fingerprint": trainer.fp, "wall_seconds": wall, "examples_seen": trainer.examples_seen,
          # rng_seed: the seed that drove this model's randomness (an oracle's is its family's, diffunlearn.seeding)
          "loss_log": trainer.loss_log, "device": str(trainer.device), "seed": run.seed, "rng_seed": run.seed,
          "total_steps": trainer.total_steps, "mixed_precision": cfg["mixed_precision"],
          # Model FLOPs (forward + backward) and what the steps achieved, checkpoint writing excluded.
          **trainer.meter.record(accum * len(run.objective(done - 1))),
          "fast_path": trainer.fast, **run.extra_state}
    sampler_state = trainer.ctx.sampler.state_dict()
    if sampler_state:
        st["timestep_sampler"] = sampler_state
    if trainer.world > 1:
        st["num_processes"] = trainer.world
    if trainer.accelerator.scaler is not None:
        st["scaler"] = trainer.accelerator.scaler.state_dict()
    return st


def publish_checkpoints(out_dir: Path, resume_dir: Path, ckpt_steps) -> None:
    """Move every kept checkpoint out of resume/ into the declared place, then drop resume/."""
    for step_no, path in list_checkpoints(resume_dir):
        if step_no in ckpt_steps:
            target = out_dir / path.name
            if target.exists():
                shutil.rmtree(target)
            os.replace(path, target)
    shutil.rmtree(resume_dir, ignore_errors=True)


def read_summary(out_dir, total_steps: int) -> dict:
    """The final checkpoint's state.json without the optimizer and the loss log."""
    summary = json.loads((Path(out_dir) / f"checkpoint-{total_steps}" / "training_state" / "state.json").read_text())
    summary.pop("optimizer", None)
    summary.pop("loss_log", None)
    return summary


class Trainer:
    """One run: :meth:`train` steps from the restored (or initial) state to the end, checkpointing atomically.

    Checkpoints are written to ``<out_dir>/resume/`` while the run is going and moved to
    ``<out_dir>/checkpoint-<step>`` when it finishes, so a workflow manager that deletes the declared
    outputs of a failed job never deletes the state it resumes from.
    """

    def __init__(self, run: TrainRun, log: Callable[[str], None] = print):
        from diffunlearn.config import checkpoint_steps

        self.run, self.cfg = run, run.train_cfg
        self.total_steps = run.steps or self.cfg["steps"]
        self.ckpt_steps = (checkpoint_steps({**self.cfg, "steps": self.total_steps}) if run.checkpoint_steps is None
                           else sorted(run.checkpoint_steps))
        self.out_dir = Path(run.out_dir)
        self.resume_dir = self.out_dir / "resume"
        self.resume_dir.mkdir(parents=True, exist_ok=True)
        self.fp = run_fingerprint(run, self.total_steps)
        self.accelerator = setup_accelerator(self.cfg, run.device)
        self.device = self.accelerator.device
        # Data parallel (train_data_parallel): every process takes its slice of each global batch, DDP averages
        # the gradients, so a step sees the same batch_size examples as one process would; rank 0 writes.
        self.world, rank = self.accelerator.num_processes, self.accelerator.process_index
        self.is_main = self.accelerator.is_main_process
        self.log = log if self.is_main else (lambda msg: None)  # one log: the main process's
        local_batch = self.cfg["batch_size"] // self.world
        self.part = slice(rank * local_batch, (rank + 1) * local_batch)
        state = self._setup_models()
        self._setup_data()
        self._setup_objective(state)
        self.meter = FlopMeter(self.raw_module, (self.cfg["batch_size"], self.channels, self.size, self.size),
                               self.cfg["mixed_precision"], self.device, self.world, state, self.log)
        self.wall_before = float(state.get("wall_seconds", 0.0))
        self.examples_seen = int(state.get("examples_seen", 0))
        self.loss_log = list(state.get("loss_log", []))
        self.start_step = int(state.get("step", 0))

    def _make_model(self):
        from diffunlearn.models import build_unet

        if self.run.build_model is not None:
            return self.run.build_model(self.run.seed)
        return build_unet(self.run.model_cfg, self.size, self.channels, seed=self.run.seed)

    def _setup_models(self) -> dict:
        """Raw and EMA models, scheduler, optimizer: restored or initialised, prepared by accelerate."""
        import torch

        from diffunlearn.models import build_scheduler

        first = next(iter(self.run.sources.values()))
        self.size, self.channels = first.shape[1], first.shape[3]
        raw, ema = self._make_model(), self._make_model()
        self.scheduler = build_scheduler(self.run.diffusion_cfg)
        self.fast = fast_path(self.cfg, self.device)
        if self.fast["channels_last"]:
            # NHWC weights (and so activations) for the trained model; the EMA copy stays contiguous, as saved.
            raw.to(memory_format=torch.channels_last)
        self.log("fast path: " + ", ".join(f"{k}={'on' if v else 'off'}" for k, v in self.fast.items()))
        opt_state, state = restore_or_init(self.run, raw, ema, self.resume_dir, self.fp, self.log)
        self.post_step = self.run.post_step_factory(raw) if self.run.post_step_factory else None
        optimizer = build_optimizer(raw.parameters(), self.cfg, self.fast)
        if opt_state is not None:
            optimizer.load_state_dict(opt_state)
            if self.fast["channels_last"]:
                _match_state_layout(optimizer)
        self.raw, self.optimizer = self.accelerator.prepare(raw, optimizer)
        if state.get("scaler") and self.accelerator.scaler is not None:
            self.accelerator.scaler.load_state_dict(state["scaler"])
        self.ema = ema.to(self.device).requires_grad_(False).eval()
        self.raw.train()
        self.forward_module = self.raw
        if self.fast["compile"]:
            from diffunlearn.speed import compile_module

            self.forward_module = compile_module(self.raw)
        self.raw_module = self.accelerator.unwrap_model(self.raw)
        self.ema_params, self.raw_params = list(self.ema.parameters()), list(self.raw_module.parameters())
        return state

    def _setup_data(self) -> None:
        from diffunlearn.data import to_model_space

        self.data = {k: to_model_space(v).to(self.device) for k, v in self.run.sources.items()}
        self.samplers = {k: BatchSampler(len(v), self.cfg["batch_size"], self.run.seed, self.device)
                         for k, v in self.data.items()}

    def _setup_objective(self, state: dict) -> None:
        """The loss, timestep sampler (its state restored), weighting and reference model of the steps."""
        T = self.scheduler.config.num_train_timesteps
        sampler = self.run.timesteps(self.scheduler) if self.run.timesteps else UniformTimesteps(T)
        if state.get("timestep_sampler"):
            sampler.load_state_dict(state["timestep_sampler"])
        weights = self.run.weighting(self.scheduler) if self.run.weighting else None
        self.loss = self.run.loss or DenoisingLoss()
        self.ctx = StepContext(forward=self._forward, alphas_cumprod=self.scheduler.alphas_cumprod.to(self.device),
                               num_train_timesteps=T, device=self.device, part=self.part, sampler=sampler,
                               weights=None if weights is None else weights.to(self.device),
                               reference=self._load_reference())
        self.use_dropout = self.run.model_cfg.get("dropout", 0.0) > 0

    def _load_reference(self):
        """The frozen reference model's forward (no gradient), or None when the run has no reference."""
        import torch

        if self.run.reference is None:
            return None
        from diffunlearn.checkpoint import load_ema_unet

        path = self.run.init_from if self.run.reference == "init" else self.run.reference
        reference = load_ema_unet(path).to(self.device).requires_grad_(False).eval()

        def forward(x_t, t):
            with torch.no_grad(), self.accelerator.autocast():
                return reference(x_t, t).sample

        return forward

    def _forward(self, x_t, t):
        with self.accelerator.autocast():
            return self.forward_module(x_t, t).sample

    def batch(self, name: str, micro_batch: int, g) -> Batch:
        """Micro-batch ``micro_batch`` of source ``name``: this process's rows, randomly flipped if configured."""
        import torch

        idx = self.samplers[name].indices(micro_batch)
        n_global, rows = idx.shape[0], (idx[self.part] if self.world > 1 else idx)
        flip = None
        if self.cfg["random_flip"]:
            flip = (torch.rand(n_global, device=self.device, generator=g)[self.part] < 0.5).view(-1, 1, 1, 1)

        def take(source: str):
            x0 = self.data[source][rows]
            return x0 if flip is None else torch.where(flip, x0.flip(-1), x0)

        return Batch(source=name, x0=take(name), n_global=n_global, take=take)

    def step(self, step: int) -> None:
        """One optimizer step: the schedule's terms, each over the accumulated micro-batches; clip, update, EMA."""
        import torch

        accum = self.cfg["gradient_accumulation_steps"]
        for group in self.optimizer.param_groups:
            group["lr"] = lr_at(step, self.cfg["lr"], self.cfg["warmup_steps"])
        g = torch.Generator(device=self.device).manual_seed(step_seed(self.run.seed, step))
        if self.use_dropout:
            torch.manual_seed(step_seed(self.run.seed, step, stream=2))
        self.ctx.step = step
        for name, sign in self.run.objective(step):
            for a in range(accum):
                batch = self.batch(name, step * accum + a, g)
                loss = self.loss(self.ctx, batch, g)
                self.accelerator.backward(sign * loss / accum)
                self.loss_acc += loss.detach() / accum
                self.examples_seen += batch.n_global
                self.meter.micro_batch()
            self.loss_count += 1
        if self.cfg["grad_clip"]:
            self.accelerator.clip_grad_norm_(self.raw.parameters(), self.cfg["grad_clip"])
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        with torch.no_grad():
            if self.post_step is not None:
                self.post_step(self.raw_module, self.ema)
            torch._foreach_lerp_(self.ema_params, self.raw_params, 1.0 - ema_decay_at(step, self.cfg["ema_decay"]))

    def log_loss(self, done: int) -> None:
        """Append the mean loss since the last log to the loss log (the only host sync of the loop)."""
        if self.world > 1:
            self.loss_acc = self.accelerator.reduce(self.loss_acc, reduction="mean")  # every process's loss, averaged
        mean_loss = (self.loss_acc / max(self.loss_count, 1)).item()
        self.loss_log.append([done, mean_loss])
        lr = self.optimizer.param_groups[0]["lr"]
        self.log(f"step {done}/{self.total_steps} loss {mean_loss:.5f} lr {lr:.2e}")
        self.loss_acc.zero_()
        self.loss_count = 0

    def save(self, done: int) -> None:
        """Write the checkpoint after ``done`` steps into resume/ (main process), its time excluded from the meter."""
        self.meter.pause()
        wall = self.wall_before + time.time() - self.t0
        st = checkpoint_record(self, done, wall)
        if self.is_main:
            save_checkpoint(self.resume_dir / f"checkpoint-{done}", ema_unet=self.ema, raw_unet=self.raw_module,
                            scheduler=self.scheduler, optimizer_state=self.optimizer.state_dict(), state=st)
        self.log(f"checkpoint {done} written ({wall:.1f} s of training so far"
                 + (f", {st['achieved_tflops']:.3g} TFLOP/s" if st["achieved_tflops"] else "")
                 + (f", MFU {st['mfu']:.1%}" if st["mfu"] else "") + ")")
        self.meter.resume()

    def train(self) -> dict:
        """Run the remaining steps, publish the checkpoints, return the final checkpoint's summary."""
        import torch
        from tqdm import tqdm

        self.t0 = time.time()
        self.loss_acc, self.loss_count = torch.zeros((), device=self.device), 0
        progress = tqdm(range(self.start_step, self.total_steps), initial=self.start_step, total=self.total_steps,
                        mininterval=5, desc=self.out_dir.name, file=None, dynamic_ncols=False, ascii=True)
        self.meter.resume()  # the training steps' own time, checkpoint writing excluded
        for step in progress:
            self.step(step)
            done = step + 1
            if done % self.cfg["log_every"] == 0 or done == self.total_steps:
                self.log_loss(done)
            if done in self.ckpt_steps:
                self.save(done)
        progress.close()
        if self.is_main:
            publish_checkpoints(self.out_dir, self.resume_dir, self.ckpt_steps)
        if self.world > 1:
            self.accelerator.wait_for_everyone()  # the others read the published state below
        return read_summary(self.out_dir, self.total_steps)


def run_training(run: TrainRun, log: Callable[[str], None] = print) -> dict:
    """Train (or fine-tune) ``run`` in this process, resuming from its newest valid checkpoint; the final summary."""
    return Trainer(run, log=log).train()


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
    return read_summary(run.out_dir, run.steps or run.train_cfg["steps"])
