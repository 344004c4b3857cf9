"""GPU slots (diffunlearn.gpu_slots) on a machine without GPUs: DIFFUNLEARN_NUM_GPUS pretends N devices.

Holders are real concurrent processes; no test depends on wall-clock limits: a holder prints its slot
and then blocks on stdin until the test closes it (or kills the process)."""
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

HOLDER = r"""
import os, sys
from diffunlearn.gpu_slots import acquire_gpu_slot
timeout = None if sys.argv[1] == "none" else float(sys.argv[1])
try:
    slot = acquire_gpu_slot(timeout=timeout, poll=0.02)
except TimeoutError:
    print("timeout", flush=True)
    sys.exit(3)
print(slot, os.environ.get("CUDA_VISIBLE_DEVICES"), flush=True)
sys.stdin.read()   # hold the slot until the test closes stdin or kills this process
"""


def _env(lock_dir, n):
    env = dict(os.environ, DIFFUNLEARN_GPU_LOCK_DIR=str(lock_dir), DIFFUNLEARN_NUM_GPUS=str(n),
               PYTHONPATH=str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("CUDA_VISIBLE_DEVICES", None)
    return env


def _start(env, timeout="none"):
    return subprocess.Popen([sys.executable, "-c", HOLDER, timeout], env=env, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)


def _slot(proc):
    line = proc.stdout.readline().split()
    assert line and line[0] != "timeout", f"holder did not get a slot: {line}"
    slot, visible = int(line[0]), line[1]
    assert visible == str(slot)
    return slot


def _stop(procs):
    for p in procs:
        if p.poll() is None:
            p.stdin.close()
            p.wait()


def test_concurrent_jobs_get_distinct_devices_and_crash_frees_one(tmp_path):
    n = 3
    env = _env(tmp_path / "locks", n)
    holders = [_start(env) for _ in range(n)]
    try:
        slots = [_slot(p) for p in holders]
        assert sorted(slots) == list(range(n))

        # all taken: a job that will not wait gives up after one scan of the devices
        probe = _start(env, timeout="0")
        assert probe.stdout.readline().strip() == "timeout"
        assert probe.wait() == 3

        # an N+1th job waits ...
        waiter = _start(env)
        holders.append(waiter)
        # ... until a holder crashes: SIGKILL, no clean-up code runs; the kernel drops the flock
        victim = holders[1]
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        assert _slot(waiter) == slots[1]

        # and a holder that ends normally frees its device too
        holders[0].stdin.close()
        holders[0].wait()
        late = _start(env)
        holders.append(late)
        assert _slot(late) == slots[0]
    finally:
        for p in holders:
            if p.poll() is None:
                p.kill()
                p.wait()


def test_release_and_reacquire_in_process(tmp_path, monkeypatch):
    from diffunlearn import gpu_slots

    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    lock_dir = tmp_path / "locks"
    slot = gpu_slots.acquire_gpu_slot(num_devices=2, lock_dir=str(lock_dir))
    try:
        assert slot in (0, 1)
        assert os.environ["CUDA_VISIBLE_DEVICES"] == str(slot)
        assert gpu_slots.acquire_gpu_slot(num_devices=2, lock_dir=str(lock_dir)) == slot  # idempotent
        other = _start(_env(lock_dir, 2))
        try:
            assert _slot(other) == 1 - slot
        finally:
            _stop([other])
    finally:
        gpu_slots.release_gpu_slot()
    assert gpu_slots.held_gpu_slot() is None


def test_no_gpus_is_a_no_op(tmp_path, monkeypatch):
    from diffunlearn import gpu_slots

    monkeypatch.setenv("DIFFUNLEARN_NUM_GPUS", "0")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert gpu_slots.acquire_gpu_slot(lock_dir=str(tmp_path)) is None
    assert "CUDA_VISIBLE_DEVICES" not in os.environ
    assert not any(tmp_path.iterdir())


def test_respects_an_existing_cuda_visible_devices(tmp_path):
    env = _env(tmp_path / "locks", 0)
    env.pop("DIFFUNLEARN_NUM_GPUS")
    env["CUDA_VISIBLE_DEVICES"] = "5,7"
    a, b = _start(env), _start(env)
    try:
        got = sorted(p.stdout.readline().split()[1] for p in (a, b))
        assert got == ["5", "7"]
        assert sorted(f.name for f in (tmp_path / "locks").iterdir()) == ["gpu5.lock", "gpu7.lock"]
    finally:
        _stop([a, b])


JOBLOG = r"""
import os, sys, types
from diffunlearn.snakemake_io import JobLog
sm = types.SimpleNamespace(log=[], threads=1, resources={"gpu": int(sys.argv[1])})
job = JobLog(sm)
print("slot", job.gpu, os.environ.get("CUDA_VISIBLE_DEVICES"), flush=True)
"""


@pytest.mark.parametrize("gpu", [0, 1])
def test_joblog_takes_a_slot_only_for_gpu_jobs(tmp_path, gpu):
    env = _env(tmp_path / "locks", 2)
    env.pop("SLURM_JOB_ID", None)
    out = subprocess.run([sys.executable, "-c", JOBLOG, str(gpu)], env=env, capture_output=True, text=True,
                         check=True).stdout.splitlines()
    out = next(line.split()[1:] for line in out if line.startswith("slot "))  # JobLog also logs its own lines
    if gpu:
        assert out[0] in ("0", "1") and out[1] == out[0]
    else:
        assert out == ["None", "None"]


def test_a_multi_gpu_job_takes_all_its_devices_at_once(tmp_path, monkeypatch):
    """train.num_processes = 2 with a GPU: the job holds two distinct devices; others get the rest; all or nothing."""
    from diffunlearn import gpu_slots

    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    lock_dir = tmp_path / "locks"
    one = _start(_env(lock_dir, 3))
    try:
        single = _slot(one)
        slots = gpu_slots.acquire_gpu_slots(2, num_devices=3, lock_dir=str(lock_dir), timeout=5, poll=0.02)
        try:
            assert len(set(slots)) == 2 and single not in slots
            assert os.environ["CUDA_VISIBLE_DEVICES"] == ",".join(str(s) for s in slots)
            late = _start(_env(lock_dir, 3), timeout="0.3")  # every device is taken now
            assert late.stdout.readline().strip() == "timeout"
            late.wait()
        finally:
            gpu_slots.release_gpu_slot()
        assert gpu_slots.held_gpu_slot() is None
        # Two wanted, only two free of three while `one` holds its device: none is kept when it times out.
        _stop([one])
        blocker = _start(_env(lock_dir, 3))
        blocked = _slot(blocker)
        try:
            with pytest.raises(ValueError):
                gpu_slots.acquire_gpu_slots(4, num_devices=3, lock_dir=str(lock_dir))
            other = _start(_env(lock_dir, 2 + 1))
            taken = _slot(other)
            try:
                with pytest.raises(TimeoutError):
                    gpu_slots.acquire_gpu_slots(2, num_devices=3, lock_dir=str(lock_dir), timeout=0.2, poll=0.02)
                assert gpu_slots.held_gpu_slot() is None
            finally:
                _stop([other])
            assert taken != blocked
        finally:
            _stop([blocker])
    finally:
        _stop([one])
