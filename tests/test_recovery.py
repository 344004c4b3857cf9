"""docs/recovery.md as a test: Snakemake itself is killed hard (SIGKILL of its process group, as the OOM
killer or a closed terminal does) while a training job is writing checkpoints; the documented commands
(`snakemake --unlock`, then the same command) finish the run, and its results equal an uninterrupted run's.

The run is the tiny config restricted to one target (the original's final checkpoint, sampled and scored),
with enough training steps that the kill lands mid-training, after the first checkpoint."""
import hashlib
import json
import os
import re
import signal
import subprocess
import time

import numpy as np
import pytest

from conftest import planned_jobs, run_snakemake, snakemake_command, tiny_config, write_config

pytestmark = pytest.mark.slow

STEPS = 100
METRIC_KEYS = ("model", "step", "num_samples", "num_reference", "fid", "is_mean", "is_std", "precision", "recall",
               "weights_sha256")
WAIT_FOR_CHECKPOINT = 1800  # a safety net against a hung run, not a speed requirement


def _setup(work):
    work.mkdir()
    cfg = tiny_config(work / "results", **{"train.steps": STEPS, "train.checkpoint_every": 10,
                                            "train.log_every": 10})
    configfile = write_config(work / "config.yaml", cfg)
    target = str(work / f"results/t/metrics/classifier/original.s0/step{STEPS}.json")
    return configfile, target


def _kill_while_training(work, configfile, target):
    """Start the run in its own process group; SIGKILL the whole group once the first training checkpoint is
    on disk. Returns Snakemake's output up to the kill."""
    resume = work / "results/t/models/original.s0/resume"
    cmd, env = snakemake_command(work, configfile, target)
    out_file = work / "killed.out"
    with open(out_file, "w") as fh:
        proc = subprocess.Popen(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + WAIT_FOR_CHECKPOINT
        while proc.poll() is None and time.monotonic() < deadline:
            if resume.is_dir() and any(re.fullmatch(r"checkpoint-\d+", p.name) for p in resume.iterdir()):
                break
            time.sleep(0.01)
        assert proc.poll() is None, f"the run ended before it could be killed:\n{out_file.read_text()[-3000:]}"
        os.killpg(proc.pid, signal.SIGKILL)  # Snakemake and the jobs it started: one process group
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    return out_file.read_text()


def _digests(root, pattern):
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.glob(pattern))}


def test_killed_snakemake_recovers_with_unlock_and_the_same_command(tmp_path):
    ref, work = tmp_path / "uninterrupted", tmp_path / "killed"
    ref_config, ref_target = _setup(ref)
    run_snakemake(ref, ref_config, ref_target)
    configfile, target = _setup(work)

    out = _kill_while_training(work, configfile, target)
    assert "Using workflow specific profile" in out and "profiles/default" in out, out[-2000:]
    model = work / "results/t/models/original.s0"
    assert not (model / "cost.json").exists(), "training finished before the kill"
    assert list((work / ".snakemake/locks").iterdir()), "a killed Snakemake leaves its locks"

    # The same command alone stops at the stale lock (rerun-incomplete comes from profiles/default) ...
    again = run_snakemake(work, configfile, target, check=False)
    assert again.returncode != 0
    assert "cannot be locked" in again.stdout + again.stderr and "--unlock" in again.stdout + again.stderr
    # ... so: `snakemake --unlock`, then the same command.
    run_snakemake(work, configfile, "--unlock", target)
    run_snakemake(work, configfile, target)
    train_log = (work / "results/t/logs/train_original/s0.log").read_text()
    assert re.search(r"resuming from \S+/resume/checkpoint-\d+", train_log), train_log[-2000:]
    assert not (model / "resume").exists()

    a, b = ref / "results/t", work / "results/t"
    weights = _digests(a, "models/original.s0/checkpoint-*/**/*.safetensors")
    assert len([k for k in weights if k.endswith("unet/diffusion_pytorch_model.safetensors")]) == STEPS // 10
    assert weights == _digests(b, "models/original.s0/checkpoint-*/**/*.safetensors")
    assert _digests(a, "data/dataset.npz") == _digests(b, "data/dataset.npz")
    rel = f"samples/original.s0/step{STEPS}/samples.npz"
    with np.load(a / rel) as x, np.load(b / rel) as y:
        assert np.array_equal(x["images"], y["images"])
    rel = f"metrics/classifier/original.s0/step{STEPS}.json"
    x, y = json.loads((a / rel).read_text()), json.loads((b / rel).read_text())
    assert {k: x[k] for k in METRIC_KEYS} == {k: y[k] for k in METRIC_KEYS}
    assert planned_jobs(work, configfile, target) == {}
