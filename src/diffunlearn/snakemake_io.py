"""The edge between Snakemake jobs and the package: logging, threads, device. Used by workflow/scripts."""
from __future__ import annotations

import atexit
import os
import sys
import time

_IMPORTED_AT = time.time()


class JobLog:
    """Send the job's stdout / stderr (tqdm included) to the rule's log file; ``log(msg)`` adds a timestamped line."""

    def __init__(self, snakemake):
        self.path = snakemake.log[0] if len(snakemake.log) else None
        self.t0 = time.time()
        if self.path:
            os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
            self._fh = open(self.path, "w", buffering=1)
            sys.stdout = sys.stderr = self._fh
        threads = max(1, int(getattr(snakemake, "threads", 1) or 1))
        self.gpu = _take_gpu_slot(snakemake)
        if self.gpu is not None:
            self(f"GPU slot {self.gpu}: CUDA_VISIBLE_DEVICES={os.environ['CUDA_VISIBLE_DEVICES']}")
        _set_torch_threads(threads)
        self.threads = threads
        self._ready = False
        self(f"started: {process_age():.2f}s after process start, {time.process_time():.2f}s CPU")
        atexit.register(self._done)

    def __call__(self, msg: str) -> None:
        print(f"[{time.time() - self.t0:8.1f}s] {msg}", flush=True)

    def ready(self) -> None:
        """Mark the start of the job's work (inputs read, model built): the end of its start-up.
        benchmarks/bench_startup.py reads this line and the "done" line written at exit."""
        if not self._ready:
            self._ready = True
            self(f"ready: {process_age():.2f}s after process start, {time.process_time():.2f}s CPU")

    def _done(self) -> None:
        try:
            self(f"done: {process_age():.2f}s after process start, {time.process_time():.2f}s CPU")
        except (ValueError, OSError):  # the log file is already closed
            pass


def process_age() -> float:
    """Seconds since this job's process started (from /proc; time since import of this module elsewhere).
    A job run in a fork of the warm process (diffunlearn.warm_start) counts from its job process's start."""
    from diffunlearn.warm_start import ENV_STARTED_AT, process_start_epoch

    try:
        started_at = float(os.environ[ENV_STARTED_AT])
    except (KeyError, ValueError):
        started_at = process_start_epoch(default=_IMPORTED_AT)
    return max(0.0, time.time() - started_at)


def _set_torch_threads(threads: int) -> None:
    """The job's intra-op threads, without importing torch: a job that never imports torch does not pay
    for it; one that does later reads OMP_NUM_THREADS when it starts."""
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)
    else:
        os.environ["OMP_NUM_THREADS"] = str(threads)


def _take_gpu_slot(snakemake):
    """A job with resources gpu > 0 on a workstation takes one free GPU (diffunlearn.gpu_slots) before torch
    initialises CUDA, and keeps it until the process ends. Not inside SLURM jobs: SLURM pins their GPUs."""
    resources = getattr(snakemake, "resources", None)
    try:
        wanted = int(resources.get("gpu", 0) or 0) if resources is not None else 0
    except (TypeError, ValueError):
        wanted = 0
    if wanted <= 0 or os.environ.get("SLURM_JOB_ID"):
        return None
    from diffunlearn.gpu_slots import acquire_gpu_slot, acquire_gpu_slots

    if wanted > 1:  # data-parallel training (train.num_processes): all its GPUs, one per process
        return acquire_gpu_slots(wanted)
    return acquire_gpu_slot()


def job_device(config_device: str) -> str:
    from diffunlearn.config import resolve_device

    return resolve_device(config_device)
