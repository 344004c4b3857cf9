"""What every job pays before it works: start-up (process start -> first useful work) and work, per rule.

Three modes:

    python benchmarks/bench_startup.py --logs results/default/logs
        Parses the job logs of a finished (or running) run. diffunlearn.snakemake_io.JobLog writes
        "ready: <s> after process start" when a job starts its work and "done: <s> after process start"
        at exit; start-up = ready, work = done - ready (a job that never calls ready() counts the JobLog
        start instead). Prints per rule: jobs, start-up mean and sd, work mean and sd, and their totals.

    python benchmarks/bench_startup.py --imports [--repeat 3] [--src DIR]
        Single-job mode, no run needed: per rule, a fresh interpreter does what the job does before its
        work (Snakemake's script preamble imports, the script's top-level imports, JobLog, the imports
        its work needs first: WORK_IMPORTS); the CPU seconds (user + system) and wall seconds of that
        process are timed (median of --repeat; CPU seconds are the figure to compare beside other work). --src runs another checkout's package (e.g. `git archive <commit> | tar -x -C DIR`)
        to time before/after without a run. Also lists which heavy modules each rule ends up importing.

    python benchmarks/bench_startup.py --clean-clone [--cores 2] [--keep DIR]
        Clones this repository (its committed HEAD) into a temp dir, runs `snakemake --cores N` on the
        embedded default there, reports the wall time, the per-rule table from its logs, the number of
        metric rows and report files, and checks that a second `snakemake -n` plans nothing.
"""
from __future__ import annotations

import argparse
import ast
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINE = re.compile(r"\] (started|ready|done): ([0-9.]+)s after process start(?:, ([0-9.]+)s CPU)?")
HEAVY = ("torch", "torch._dynamo", "diffusers", "scipy.stats", "numba", "pandas", "matplotlib", "peft",
         "transformers", "accelerate", "torchvision", "sklearn")
PREAMBLE = "import pickle\nfrom snakemake.logging import logger\nfrom snakemake.iocontainers import Snakemake\n"
# What a job imports inside the package's functions before its first useful line (model building, loading).
_UNET = "import diffunlearn.models as _m\n_m.unet_class()\n_m.scheduler_class('ddpm')\n"
WORK_IMPORTS = {
    "sample": _UNET, "margins": _UNET, "unlearn": _UNET + "import accelerate\n", "train": _UNET + "import accelerate\n",
    "train_subset": _UNET + "import accelerate\n", "init_model": _UNET + "from diffusers import DDPMPipeline\n",
    "evaluate": "import torch\n", "reference_stats": "import torch\n", "train_classifier": "import torch\n",
    "klom": "from diffunlearn.metrics import klom_kernel\n",
}


def rule_scripts() -> dict[str, str]:
    """rule name -> its script's stem, from workflow/rules/*.smk."""
    out = {}
    for smk in sorted((ROOT / "workflow" / "rules").glob("*.smk")):
        rule = None
        for line in smk.read_text().splitlines():
            m = re.match(r"rule (\w+):", line)
            if m:
                rule = m.group(1)
            m = re.search(r'"\.\./scripts/(\w+)\.py"', line)
            if m and rule:
                out[rule] = m.group(1)
    return out


def parse_log(path: Path) -> dict | None:
    marks = {}
    for m in LINE.finditer(path.read_text(errors="replace")):
        marks.setdefault(m.group(1), (float(m.group(2)), float(m.group(3) or "nan")))
    if "done" not in marks or not ({"ready", "started"} & set(marks)):
        return None
    ready = marks.get("ready", marks.get("started"))
    return {"startup": ready[0], "work": max(0.0, marks["done"][0] - ready[0]),
            "startup_cpu": ready[1], "work_cpu": max(0.0, marks["done"][1] - ready[1])}


def log_table(logs: Path) -> list[dict]:
    """Per rule (logs/<rule>.log or logs/<rule>/...): jobs, start-up and work mean / sd / total."""
    by_rule: dict[str, list[dict]] = {}
    for path in sorted(logs.rglob("*.log")):
        rel = path.relative_to(logs)
        rule = rel.parts[0] if len(rel.parts) > 1 else rel.stem
        parsed = parse_log(path)
        if parsed:
            by_rule.setdefault(rule, []).append(parsed)
    rows = []
    for rule, jobs in sorted(by_rule.items(), key=lambda kv: -sum(j["startup"] for j in kv[1])):
        row = {"rule": rule, "jobs": len(jobs)}
        for key in ("startup", "work", "startup_cpu", "work_cpu"):
            values = [j[key] for j in jobs]
            row.update({f"{key}_mean": statistics.mean(values), f"{key}_total": sum(values),
                        f"{key}_sd": statistics.stdev(values) if len(values) > 1 else 0.0})
        rows.append(row)
    return rows


def print_log_table(rows: list[dict]) -> None:
    print("| rule | jobs | start-up wall, mean ± sd (s) | start-up CPU, mean (s) | work wall, mean ± sd (s) | "
          "work CPU, mean (s) | start-up wall, total (s) | work wall, total (s) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['rule']} | {r['jobs']} | {r['startup_mean']:.2f} ± {r['startup_sd']:.2f} | {r['startup_cpu_mean']:.2f} | "
              f"{r['work_mean']:.2f} ± {r['work_sd']:.2f} | {r['work_cpu_mean']:.2f} | {r['startup_total']:.0f} | "
              f"{r['work_total']:.0f} |")
    if rows:
        print(f"| all | {sum(r['jobs'] for r in rows)} | | {sum(r['startup_cpu_total'] for r in rows):.0f} (total) | | "
              f"{sum(r['work_cpu_total'] for r in rows):.0f} (total) | {sum(r['startup_total'] for r in rows):.0f} | "
              f"{sum(r['work_total'] for r in rows):.0f} |")


def script_imports(stem: str, root: Path = ROOT) -> str:
    """The module-level import statements of <root>/workflow/scripts/<stem>.py, as source."""
    src = (root / "workflow" / "scripts" / f"{stem}.py").read_text()
    tree = ast.parse(src)
    return "\n".join(ast.get_source_segment(src, n) for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom)))


def job_prelude(stem: str, log_path: str, root: Path = ROOT) -> str:
    """A program doing what a job of this script does before its work; prints the heavy modules it loaded."""
    stub = (f"import types\nsnakemake = types.SimpleNamespace(log=[{log_path!r}], threads=1, resources={{}})\n"
            "log = JobLog(snakemake)\n")
    report = f"import sys\nprint(' '.join(m for m in {HEAVY!r} if m in sys.modules), file=sys.__stdout__)\n"
    return PREAMBLE + script_imports(stem, root) + "\nfrom diffunlearn.snakemake_io import JobLog\n" + stub + \
        WORK_IMPORTS.get(stem, "") + report


def time_warm(stems: list[str], repeat: int) -> list[dict]:
    """Per rule, the job-like program of --imports run as a file (as Snakemake runs a script), cold
    (DIFFUNLEARN_WARM_START=0: a fresh interpreter imports everything) against warm (handed to a fork of the warm
    process, which a first untimed call starts), alternating in rounds. Wall seconds of the job's process, and
    the ratio of the medians."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for stem in stems:
            program = job_prelude(stem, os.path.join(tmp, f"{stem}.log"), ROOT)
            path = Path(tmp) / f"{stem}.py"
            # as in a job: Snakemake's preamble, the script's run_warm(), then the rest
            path.write_text(PREAMBLE + "from diffunlearn.warm_start import run_warm\nrun_warm()\n" + program[len(PREAMBLE):])
            envs = {"cold": {**os.environ, "DIFFUNLEARN_WARM_START": "0"},
                    "warm": {**os.environ, "DIFFUNLEARN_WARM_START": "1"}}
            subprocess.run([sys.executable, str(path)], env=envs["warm"], capture_output=True, check=True)  # warm-up
            times = {"cold": [], "warm": []}
            for _ in range(repeat):
                for side in ("cold", "warm"):
                    t0 = time.perf_counter()
                    subprocess.run([sys.executable, str(path)], env=envs[side], capture_output=True, check=True)
                    times[side].append(time.perf_counter() - t0)
            cold, warm = statistics.median(times["cold"]), statistics.median(times["warm"])
            rows.append({"script": stem, "cold_wall_median_s": cold, "warm_wall_median_s": warm, "ratio": cold / warm})
            print(f"{stem:18s} cold {cold:6.2f} s  warm {warm:6.2f} s  ratio {cold / warm:5.1f}x", flush=True)
    return rows


def time_imports(stems: list[str], repeat: int, src: Path | None) -> list[dict]:
    env = dict(os.environ)
    if src is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(src / "src")] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for stem in stems:
            program = job_prelude(stem, os.path.join(tmp, f"{stem}.log"), src or ROOT)
            if src is not None and "unet_class" in program and "def unet_class" not in (src / "src/diffunlearn/models.py").read_text():
                program = program.replace(_UNET, "import torch\nfrom diffusers.models.unets.unet_2d import UNet2DModel\n"
                                                 "from diffusers import DDPMScheduler\n")
            times, cpus, heavy = [], [], ""
            for _ in range(repeat):
                t0, c0 = time.perf_counter(), _children_cpu()
                done = subprocess.run([sys.executable, "-c", program], env=env, capture_output=True, text=True)
                times.append(time.perf_counter() - t0)
                cpus.append(_children_cpu() - c0)
                if done.returncode:
                    raise SystemExit(f"{stem}: {done.stderr.strip().splitlines()[-1]}")
                heavy = done.stdout.strip()
            rows.append({"script": stem, "cpu_median_s": statistics.median(cpus), "cpu_min_s": min(cpus),
                         "wall_median_s": statistics.median(times), "heavy": heavy})
            print(f"{stem:18s} CPU {statistics.median(cpus):6.2f} s (min {min(cpus):5.2f})  wall {statistics.median(times):6.2f} s"
                  f"  {heavy}", flush=True)
    return rows


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def clean_clone(cores: int, keep: str | None, cold: bool = False) -> None:
    """The embedded default from a fresh clone of HEAD: wall time, per-rule table, outputs, re-plan.
    ``cold``: every job in its own process (DIFFUNLEARN_WARM_START=0), as before the warm start."""
    where = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="diffunlearn-clone-"))
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(where)], check=True)
    print(f"clone of {subprocess.run(['git', '-C', str(where), 'rev-parse', '--short', 'HEAD'], capture_output=True, text=True).stdout.strip()} in {where}")
    t0 = time.time()
    env = {**os.environ, "DIFFUNLEARN_WARM_START": "0"} if cold else None
    run = subprocess.run(["snakemake", "--cores", str(cores)], cwd=where, capture_output=True, text=True, env=env)
    wall = time.time() - t0
    (where / "snakemake_run.log").write_text(run.stdout + run.stderr)
    jobs = re.findall(r"(\d+) of (\d+) steps \(100%\) done", run.stderr)
    print(f"snakemake --cores {cores}: exit {run.returncode}, {wall:.0f} s wall ({wall / 60:.1f} min), steps {jobs}")
    results = where / "results" / "default"
    print_log_table(log_table(results / "logs"))
    metrics = sorted((results / "metrics").rglob("step*.json"))
    report = sorted(p.relative_to(results) for p in (results / "report").rglob("*") if p.is_file()) \
        if (results / "report").exists() else []
    print(f"metric rows: {len(metrics)}; report files ({len(report)}): {', '.join(map(str, report))}")
    again = subprocess.run(["snakemake", "-n", "--cores", str(cores)], cwd=where, capture_output=True, text=True)
    print("second snakemake -n:", "plans nothing" if "Nothing to be done" in again.stdout + again.stderr
          else (again.stdout + again.stderr)[-2000:])


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--logs", type=Path, help="a run's log dir, e.g. results/default/logs")
    mode.add_argument("--imports", action="store_true", help="time each rule's start-up imports in a fresh process")
    mode.add_argument("--clean-clone", action="store_true", help="run the embedded default from a fresh clone")
    p.add_argument("--warm", action="store_true", help="--imports: each job-like program cold against warm start")
    p.add_argument("--cold", action="store_true", help="--clean-clone: with the warm start off")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--src", type=Path, help="--imports: another checkout's root (its src/ goes first on the path)")
    p.add_argument("--scripts", nargs="*", help="--imports: only these scripts (default: every rule's)")
    p.add_argument("--cores", type=int, default=2)
    p.add_argument("--keep", help="--clean-clone: clone into this dir (kept) instead of a temp dir")
    p.add_argument("--json", type=Path, help="also write the rows as JSON")
    a = p.parse_args(argv)
    print(f"load average at start: {os.getloadavg()}, {os.cpu_count()} CPUs")
    if a.clean_clone:
        return clean_clone(a.cores, a.keep, cold=a.cold)
    if a.logs:
        rows = log_table(a.logs)
        print_log_table(rows)
    else:
        stems = a.scripts or sorted(set(rule_scripts().values()))
        rows = time_warm(stems, a.repeat) if a.warm else time_imports(stems, a.repeat, a.src)
    print(f"load average at end: {os.getloadavg()}")
    if a.json:
        a.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
