"""The SLURM profile against a real single-node SLURM (Debian's slurm-wlm, munge, slurmdbd + MariaDB).

The module starts SLURM itself with scripts/slurm/setup.sh (apt-installs the packages when missing) and
stops what it started with scripts/slurm/teardown.sh. Skipped, with the reason, when not root, when apt
cannot provide the packages, or when snakemake-executor-plugin-slurm is not installed.

1. The tiny config (1 forget set, no unlearning) through `--workflow-profile profiles/slurm` gives the same
   forget sets, bit-identical model weights and samples, and the same metric values as a local run.
2. A job cancelled with `scancel` while it runs is resubmitted (`--retries 1`) and the workflow completes.
"""
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT, run_snakemake, tiny_config, write_config

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

ACCOUNT = "diffunlearn"
STATE_DIR = Path(os.environ.get("TMPDIR", "/tmp")) / "diffunlearn-slurm"
SNAKEMAKE_TIMEOUT = 1200  # a safety net against a hung scheduler, not a speed requirement


@pytest.fixture(scope="module")
def slurm():
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        pytest.skip("needs root: installs (apt) and starts munge, MariaDB, slurmdbd, slurmctld and slurmd")
    if shutil.which("apt-get") is None and shutil.which("slurmctld") is None:
        pytest.skip("apt-get is unavailable and SLURM is not installed")
    pytest.importorskip("snakemake_executor_plugin_slurm", reason="pip install snakemake-executor-plugin-slurm")
    env = dict(os.environ, STATE_DIR=str(STATE_DIR), SLURM_TEST_ACCOUNT=ACCOUNT)
    proc = subprocess.run(["bash", str(ROOT / "scripts/slurm/setup.sh")], env=env, capture_output=True, text=True)
    if proc.returncode == 2:
        pytest.skip(f"apt could not install SLURM: {proc.stdout[-1500:]}{proc.stderr[-1500:]}")
    assert proc.returncode == 0, f"scripts/slurm/setup.sh failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    yield
    subprocess.run(["bash", str(ROOT / "scripts/slurm/teardown.sh")], env=env, capture_output=True, text=True)


def slurm_config(results_dir, **overrides):
    """tiny_config reduced: one forget set, no unlearning, small SLURM requests (the test node has 2 CPUs)."""
    cfg = tiny_config(results_dir, **overrides)
    cfg["forget_sets"] = cfg["forget_sets"][:1]
    cfg["unlearning"] = {"methods": []}
    cfg["resources"] = {fam: {"mem_mb": 1000, "runtime": 30, "cpus_per_task": 1}
                        for fam in ("default", "train", "sample", "evaluate", "unlearn", "margins")}
    return cfg


def slurm_command(workdir, configfile, *args):
    return [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"),
            "--workflow-profile", str(ROOT / "profiles/slurm"), "--directory", str(workdir),
            "--configfile", str(configfile),
            # fit bundles onto the 2-CPU test node; poll SLURM every few seconds instead of every 20+
            "--resources", "gpu=1", "cpus_per_task=2", "mem_mb=4000",
            "--slurm-init-seconds-before-status-checks", "2", *args]


def slurm_env():
    return dict(os.environ, SBATCH_ACCOUNT=ACCOUNT,
                PYTHONPATH=str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""))


def run_slurm(workdir, configfile, *args):
    proc = subprocess.run(slurm_command(workdir, configfile, *args), cwd=workdir, env=slurm_env(),
                          capture_output=True, text=True, timeout=SNAKEMAKE_TIMEOUT)
    assert proc.returncode == 0, f"SLURM run failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}"
    return proc.stdout + proc.stderr


METRIC_KEYS = ("model", "family", "seed", "step", "num_samples", "num_reference", "fid", "is_mean", "is_std",
               "precision", "recall", "feature_extractor", "weights_sha256")


def test_slurm_run_equals_local_run(slurm, tmp_path):
    local, remote = tmp_path / "local", tmp_path / "slurm"
    for work in (local, remote):
        work.mkdir()
        write_config(work / "config.yaml", slurm_config(work / "results"))
    run_snakemake(local, local / "config.yaml")
    log = run_slurm(remote, remote / "config.yaml")
    assert "submitted with SLURM jobid" in log
    # short jobs went out as bundles (profiles/slurm: groups + group-components)
    # (the plugin names each bundle's SLURM log logs/slurm/group_short_.../<jobid>.log)
    assert "/group_short" in log, log[-3000:]

    a, b = local / "results/t", remote / "results/t"
    forget = sorted(p.name for p in (a / "forget_sets").glob("*.json"))
    assert forget == sorted(p.name for p in (b / "forget_sets").glob("*.json")) == ["rand.json"]
    for name in forget:
        assert (a / "forget_sets" / name).read_bytes() == (b / "forget_sets" / name).read_bytes()

    weights = sorted(p.relative_to(a) for p in a.glob("models/*/checkpoint-*/unet/diffusion_pytorch_model.safetensors"))
    assert len(weights) == 4  # original + oracle, 2 checkpoints each
    for rel in weights:
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), f"weights differ: {rel}"

    samples = sorted(p.relative_to(a) for p in a.glob("samples/*/step*/samples.npz"))
    assert len(samples) == 4
    for rel in samples:
        with np.load(a / rel) as x, np.load(b / rel) as y:
            assert np.array_equal(x["images"], y["images"]), f"samples differ: {rel}"

    metrics = sorted(p.relative_to(a) for p in a.glob("metrics/classifier/*/step*.json"))
    assert len(metrics) == 4
    for rel in metrics:
        x, y = json.loads((a / rel).read_text()), json.loads((b / rel).read_text())
        assert {k: x[k] for k in METRIC_KEYS} == {k: y[k] for k in METRIC_KEYS}, rel
    assert (b / "report/evaluation_results.csv").exists()


def _squeue():
    out = subprocess.run(["squeue", "-h", "-o", "%i|%k|%T"], capture_output=True, text=True).stdout
    return [line.split("|") for line in out.splitlines() if line.count("|") == 2]


def test_cancelled_job_is_retried(slurm, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    # long enough training (3 checkpoints) that the job can be cancelled while it trains
    cfg = slurm_config(work / "results", **{"train.steps": 300, "train.checkpoint_every": 100, "train.log_every": 50})
    configfile = write_config(work / "config.yaml", cfg)
    target = str(work / "results/t/models/original.s0/cost.json")  # R is absolute in the config
    train_log = work / "results/t/logs/train_original/s0.log"
    out_file = work / "snakemake.out"
    with open(out_file, "w") as fh:  # a file, not a pipe: nobody reads a pipe while the test polls squeue
        proc = subprocess.Popen(slurm_command(work, configfile, "--retries", "1", target), cwd=work,
                                env=slurm_env(), stdout=fh, stderr=subprocess.STDOUT, text=True)
    cancelled = None
    try:
        deadline = time.monotonic() + SNAKEMAKE_TIMEOUT
        while cancelled is None and proc.poll() is None and time.monotonic() < deadline:
            for jobid, comment, state in _squeue():
                # cancel once the training script has started writing its log (the job is mid-run)
                if "train_original" in comment and state == "RUNNING" and train_log.exists():
                    subprocess.run(["scancel", jobid], check=True)
                    cancelled = jobid
                    break
            time.sleep(0.2)
        proc.wait(timeout=SNAKEMAKE_TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    out = out_file.read_text()
    assert cancelled is not None, f"never saw the training job running:\n{out[-4000:]}"
    assert proc.returncode == 0, f"workflow did not complete after the retry:\n{out[-6000:]}"
    assert Path(target).exists()
    assert all(p.exists() for p in (work / "results/t/models/original.s0").glob("checkpoint-*"))
    assert len(list((work / "results/t/models/original.s0").glob("checkpoint-*"))) == 3
    state = subprocess.run(["sacct", "-n", "-X", "-P", "-j", cancelled, "-o", "State"], capture_output=True,
                           text=True).stdout.split()
    assert state and state[0].startswith("CANCELLED"), state
    # the cancelled job failed, was submitted again (a new SLURM job id) and then finished
    submissions = [line for line in out.splitlines() if "submitted with SLURM jobid" in line]
    assert len(submissions) == 3, "\n".join(submissions)  # prepare_data, train_original twice
    assert f"SLURM jobid {cancelled} " in "\n".join(submissions)
