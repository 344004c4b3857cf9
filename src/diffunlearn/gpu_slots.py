"""GPU slots on a workstation: each GPU job takes one free device and keeps it for its lifetime.

Snakemake's local executor counts GPUs (``--resources gpu=N``) but does not say which GPU a job should
use, so without this every job would land on device 0. A job that needs a GPU calls
``acquire_gpu_slot()`` before torch initialises CUDA: it takes an exclusive ``fcntl.flock`` on the first
free ``<lock_dir>/gpu<i>.lock`` and sets ``CUDA_VISIBLE_DEVICES=i``. The lock is held by an open file
descriptor in this process, so the kernel releases it when the process ends, however it ends (exit,
exception, SIGKILL, OOM kill): no stale locks, nothing to clean up.

The number of devices: ``num_devices`` argument, else env ``DIFFUNLEARN_NUM_GPUS``, else the number of
lines of ``nvidia-smi -L``, else 0 (then nothing happens). The lock folder: ``lock_dir`` argument, else env
``DIFFUNLEARN_GPU_LOCK_DIR``, else ``/tmp/diffunlearn-gpu-slots`` (shared by every workflow on the
machine, so two workflows running side by side also share the GPUs without collisions).

If CUDA_VISIBLE_DEVICES is already set (say ``2,3``), only those devices are handed out: slot ``k`` is
device ``2,3``'s k-th entry, locked as ``gpu<that id>.lock``. Inside a SLURM job (SLURM_JOB_ID set)
SLURM has already pinned the job's GPUs, and ``snakemake_io.JobLog`` does not call this.
"""
from __future__ import annotations

import errno
import fcntl
import os
import subprocess
import time

DEFAULT_LOCK_DIR = "/tmp/diffunlearn-gpu-slots"

_held: dict = {"fh": None, "device": None}


def num_gpus() -> int:
    """Devices to hand out: $DIFFUNLEARN_NUM_GPUS, else `nvidia-smi -L`'s count, else 0."""
    env = os.environ.get("DIFFUNLEARN_NUM_GPUS")
    if env not in (None, ""):
        return max(0, int(env))
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return 0
    if out.returncode != 0:
        return 0
    return sum(1 for line in out.stdout.splitlines() if line.startswith("GPU "))


def lock_dir_default() -> str:
    return os.environ.get("DIFFUNLEARN_GPU_LOCK_DIR") or DEFAULT_LOCK_DIR


def _try_lock(path: str):
    fh = open(path, "a+")
    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        fh.close()
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return None
        raise
    return fh


def _device_names(num_devices: int | None) -> list[str]:
    """Names of the devices that slots stand for: entries of CUDA_VISIBLE_DEVICES, or ids 0..n-1."""
    visible = [d.strip() for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    if num_devices is not None:
        n = int(num_devices)
    elif visible and os.environ.get("DIFFUNLEARN_NUM_GPUS") in (None, ""):
        n = len(visible)
    else:
        n = num_gpus()
    if n <= 0:
        return []
    return visible[:n] if len(visible) >= n else [str(i) for i in range(n)]


def _prepare_lock_dir(lock_dir: str | None) -> str:
    lock_dir = lock_dir or lock_dir_default()
    os.makedirs(lock_dir, exist_ok=True)
    try:
        os.chmod(lock_dir, 0o1777)  # other users' jobs share the same slots
    except OSError:
        pass
    return lock_dir


def acquire_gpu_slot(num_devices: int | None = None, lock_dir: str | None = None,
                     timeout: float | None = None, poll: float = 0.2) -> int | None:
    """Take a free GPU, set CUDA_VISIBLE_DEVICES to it and return its slot; None when there are no GPUs.

    The slot is the device id when CUDA_VISIBLE_DEVICES was unset (else the index into it).

    Waits (polling every ``poll`` seconds) while all devices are taken, at most ``timeout`` seconds
    (None: as long as it takes; then TimeoutError). Calling it again in the same process returns the
    device already held. The lock is kept until ``release_gpu_slot()`` or the end of the process.
    """
    if _held["fh"] is not None:
        return _held["device"]
    names = _device_names(num_devices)
    if not names:
        return None
    n = len(names)
    lock_dir = _prepare_lock_dir(lock_dir)
    start = time.monotonic()
    # start the scan at a different device per process so that concurrent jobs rarely race for gpu0
    first = os.getpid() % n
    while True:
        for k in range(n):
            i = (first + k) % n
            fh = _try_lock(os.path.join(lock_dir, f"gpu{names[i]}.lock"))
            if fh is not None:
                fh.seek(0)
                fh.truncate()
                fh.write(f"{os.getpid()}\n")
                fh.flush()
                _held.update(fh=fh, device=i)
                os.environ["CUDA_VISIBLE_DEVICES"] = names[i]
                return i
        if timeout is not None and time.monotonic() - start >= timeout:
            raise TimeoutError(f"no free GPU among {n} in {lock_dir} after {timeout} s")
        time.sleep(poll)


def acquire_gpu_slots(count: int, num_devices: int | None = None, lock_dir: str | None = None,
                      timeout: float | None = None, poll: float = 0.2) -> list[int] | None:
    """Take ``count`` free GPUs at once (a data-parallel training job, train.num_processes), set
    CUDA_VISIBLE_DEVICES to them and return their slots; None when there are no GPUs. All or nothing:
    while fewer than ``count`` are free, the ones just locked are given back and the scan is repeated, so
    two multi-GPU jobs never hold part of each other's devices. count 1 is acquire_gpu_slot()."""
    if count <= 1:
        slot = acquire_gpu_slot(num_devices, lock_dir, timeout, poll)
        return None if slot is None else [slot]
    if _held["fh"] is not None:
        return list(_held["device"]) if isinstance(_held["device"], list) else [_held["device"]]
    names = _device_names(num_devices)
    if not names:
        return None
    n = len(names)
    if count > n:
        raise ValueError(f"{count} GPUs wanted, {n} on this machine")
    lock_dir = _prepare_lock_dir(lock_dir)
    start = time.monotonic()
    while True:
        taken = []
        for i in range(n):
            fh = _try_lock(os.path.join(lock_dir, f"gpu{names[i]}.lock"))
            if fh is not None:
                taken.append((i, fh))
                if len(taken) == count:
                    break
        if len(taken) == count:
            for _, fh in taken:
                fh.seek(0)
                fh.truncate()
                fh.write(f"{os.getpid()}\n")
                fh.flush()
            slots = [i for i, _ in taken]
            _held.update(fh=[fh for _, fh in taken], device=slots)
            os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(names[i] for i in slots)
            return slots
        for _, fh in taken:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
            fh.close()
        if timeout is not None and time.monotonic() - start >= timeout:
            raise TimeoutError(f"not {count} free GPUs among {n} in {lock_dir} after {timeout} s")
        time.sleep(poll)


def release_gpu_slot() -> None:
    """Give the held GPU(s) back (also happens automatically when the process ends)."""
    fh = _held["fh"]
    if isinstance(fh, list):
        try:
            for one in fh:
                fcntl.flock(one.fileno(), fcntl.LOCK_UN)
                one.close()
        finally:
            _held.update(fh=None, device=None)
        return
    if fh is None:
        return
    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
    finally:
        fh.close()
        _held.update(fh=None, device=None)


def held_gpu_slot() -> int | None:
    return _held["device"]
