import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def tiny_config(results_dir, **overrides) -> dict:
    """A config small enough for tests: 1 seed, 2 forget sets, 2 checkpoints, few samples."""
    cfg = {
        "experiment": "t",
        "results_dir": str(results_dir),
        "seeds": [0],
        "device": "cpu",
        "data": {"source": "digits", "max_examples": 400, "validation_fraction": 0.2},
        "forget_sets": [
            {"id": "rand", "kind": "random", "size": 20, "seed": 0},
            {"id": "cls1", "kind": "class", "label": 1},
        ],
        "model": {"block_out_channels": [8, 16], "layers_per_block": 1, "norm_num_groups": 4},
        "train": {"steps": 4, "batch_size": 16, "checkpoint_every": 2, "log_every": 2, "warmup_steps": 2},
        "sampling": {"num_samples": 16, "num_inference_steps": 4, "batch_size": 16},
        "metrics": {"feature_extractors": ["classifier"], "is_splits": 2, "classifier": {"steps": 20, "width": 8, "feature_dim": 8}},
        "unlearning": {
            "methods": ["do_nothing", "ga", "gd", "sparsified"],
            "forget_sets": ["rand"],
            "ga": {"steps": 2, "batch_size": 8},
            "gd": {"steps": 2, "batch_size": 8},
            "prune_fine_tune": {"steps": 2, "batch_size": 8},
            "sparsified": {"steps": 2, "batch_size": 8},
        },
        "margins": {"num_pairs": 2},
    }
    for key, value in overrides.items():
        node = cfg
        *parents, last = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
    return cfg


def write_config(path, cfg) -> Path:
    path = Path(path)
    path.write_text(yaml.safe_dump(cfg))
    return path


def snakemake_command(workdir, configfile, *args):
    """The command line and environment of a local run (the default workflow profile applies)."""
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "--directory", str(workdir),
           "--configfile", str(configfile), "--cores", "2", *args]
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return cmd, env


def run_snakemake(workdir, configfile, *args, check=True):
    cmd, env = snakemake_command(workdir, configfile, *args)
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


def planned_jobs(workdir, configfile, *args) -> dict:
    """Rule -> number of jobs a dry-run plans (empty when nothing is to be done)."""
    proc = run_snakemake(workdir, configfile, "-n", *args)
    return planned_jobs_of(proc.stdout + proc.stderr)


def planned_jobs_of(out: str) -> dict:
    """Rule -> number of jobs in the job-count table of a dry-run's output."""
    counts = {}
    in_table = False
    for line in out.splitlines():
        if re.match(r"^job\s+count", line):
            in_table, counts = True, {}
            continue
        if in_table:
            m = re.match(r"^(\w+)\s+(\d+)$", line.strip())
            if m:
                if m.group(1) != "total":
                    counts[m.group(1)] = int(m.group(2))
            elif line.strip() and not line.startswith("-"):
                in_table = False
    return counts


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """The tiny config run once end to end; tests dry-run changes against it."""
    work = tmp_path_factory.mktemp("tiny_run")
    cfg = tiny_config(work / "results")
    configfile = write_config(work / "config.yaml", cfg)
    run_snakemake(work, configfile)
    return work, cfg
