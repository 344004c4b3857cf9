"""Dry-run cost of a paper-scale DAG: our workflow against a bare Snakemake DAG of as many trivial jobs.

On SLURM the Snakefile is evaluated again in every job, and every `snakemake -n` / re-plan after a failure
builds the whole DAG, so the per-job cost of planning matters at 40 000 jobs. This script, in one run:

1. `snakemake -n --quiet rules` of config/cifar10_klom.yaml (the data need not exist: nothing reads it
   while planning) -> number of jobs, wall seconds, seconds per job;
2. the same command on throwaway Snakefiles (temp dir) with the same number of trivial jobs
   (N-1 independent jobs that each touch one file, and an `all` rule) -> Snakemake's own cost per job:
   `shell:` jobs (the goal's reference), `script:` jobs, and `script:` jobs whose rule also declares what
   every rule of this workflow must (log, benchmark, threads, resources, conda);
3. the ratios (goal: at most 1.5 against the trivial `shell:` jobs).

    python benchmarks/bench_dryrun.py [--configfile config/cifar10_klom.yaml] [--repeat 2] [--profile]

--profile also runs our dry-run under cProfile and prints the top functions (cumulative time), with the
ones defined in workflow/rules/*.smk marked, to find what makes our per-job cost higher.
"""
from __future__ import annotations

import argparse
import os
import platform
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

BARE_SNAKEFILE = """\
N = {n}

rule all:
    input:
        expand("out/{{i}}.txt", i=range(N)),

rule one:
    output:
        "out/{{i}}.txt",
{directives}
"""
# Three bare DAGs of trivial jobs (each job touches one file), from the barest to one whose rule declares what
# this project's rules must all declare (the brief: a log, a benchmark, threads and resources per rule, the
# work in a script under workflow/scripts; envs/ through conda:). The first is the goal's reference; the
# other two show how much of the difference is Snakemake's own price for those declarations.
BARE_DIRECTIVES = {
    "shell": """\
    shell:
        "touch {output}"
""",
    # Snakemake 9 opens and checks a rule's `script:` once per job while planning (ScriptProcessor)
    "script": """\
    script:
        "touch.py"
""",
    "declared": """\
    log:
        "logs/{i}.log",
    benchmark:
        "benchmarks/{i}.tsv"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
        gpu=0,
        cpus_per_task=1,
    conda:
        "env.yaml"
    script:
        "touch.py"
""",
}
BARE_LABELS = {
    "shell": "bare, trivial shell: jobs",
    "script": "bare, trivial script: jobs",
    "declared": "bare, trivial script: + log, benchmark, threads, resources, conda",
}


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def dry_run(cmd: list[str], cwd: Path) -> tuple[float, float, int, str]:
    """(wall s, CPU s of the snakemake process, jobs, output). CPU time is what a shared machine's load
    does not inflate; wall time is what the user waits for."""
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""))
    c0, t0 = _children_cpu(), time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env)
    wall, cpu = time.perf_counter() - t0, _children_cpu() - c0
    out = proc.stdout + proc.stderr
    if proc.returncode != 0:
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(cmd)}\n{out[-3000:]}")
    m = re.search(r"^total\s+(\d+)\s*$", out, re.M)
    if not m:
        raise SystemExit(f"no job count in the output of {' '.join(cmd)}:\n{out[-3000:]}")
    return wall, cpu, int(m.group(1)), out


def job_table(out: str) -> str:
    lines, inside = [], False
    for line in out.splitlines():
        if re.match(r"^job\s+count", line):
            inside = True
        if inside:
            lines.append(line)
            if line.startswith("total"):
                break
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--configfile", default=str(ROOT / "config/cifar10_klom.yaml"))
    ap.add_argument("--repeat", type=int, default=1,
                    help="rounds of the four dry-runs (interleaved); the minimum of each is reported")
    ap.add_argument("--seeds", type=int, default=None, help="use only the first K seeds (a quick, smaller DAG)")
    ap.add_argument("--profile", action="store_true", help="also profile our dry-run with cProfile")
    args = ap.parse_args(argv)

    snakemake = [sys.executable, "-m", "snakemake"]
    with tempfile.TemporaryDirectory(prefix="bench_dryrun_") as tmp:
        tmp = Path(tmp)
        ours_dir, bare_dir = tmp / "ours", tmp / "bare"
        ours_dir.mkdir()
        bare_dir.mkdir()
        if args.seeds is not None:
            import yaml

            cfg = yaml.safe_load(Path(args.configfile).read_text())
            cfg["seeds"] = cfg["seeds"][: args.seeds]
            args.configfile = str(tmp / f"seeds{args.seeds}.yaml")
            Path(args.configfile).write_text(yaml.safe_dump(cfg))
        ours_cmd = snakemake + ["-n", "--quiet", "rules", "--cores", "1", "--snakefile", str(ROOT / "Snakefile"),
                                "--directory", str(ours_dir), "--configfile", args.configfile]
        # Rounds of (ours and each bare DAG), the minimum of each over the rounds: on a shared
        # machine the load changes within minutes and inflates CPU time too (shared cores and caches), so
        # each round measures all of them under about the same load.
        ours, runs, n_ours, bare_cmds = [], {kind: [] for kind in BARE_DIRECTIVES}, None, {}
        for _ in range(args.repeat):
            wall, cpu, n_ours, out = dry_run(ours_cmd, ROOT)
            ours.append((cpu, wall))
            for kind, directives in BARE_DIRECTIVES.items():
                d = bare_dir / kind
                if kind not in bare_cmds:
                    d.mkdir()
                    (d / "touch.py").write_text("open(snakemake.output[0], 'w').close()\n")
                    (d / "env.yaml").write_text("channels: [conda-forge]\ndependencies: [python]\n")
                    (d / "Snakefile").write_text(BARE_SNAKEFILE.format(n=n_ours - 1, directives=directives))
                    bare_cmds[kind] = snakemake + ["-n", "--quiet", "rules", "--cores", "1", "--snakefile",
                                                   str(d / "Snakefile"), "--directory", str(d)]
                wall, cpu, n_bare, _ = dry_run(bare_cmds[kind], d)
                assert n_bare == n_ours, (n_bare, n_ours)
                runs[kind].append((cpu, wall))
        table = job_table(out)
        bare = {kind: min(r) for kind, r in runs.items()}

        c_ours, w_ours = min(ours)
        import snakemake

        print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, python {platform.python_version()}, "
              f"snakemake {getattr(snakemake, '__version__', '?')}, load average {os.getloadavg()[0]:.1f}")
        print(f"config: {args.configfile}\n{table}\n")
        width = max(len(v) for v in BARE_LABELS.values())
        print(f"{'dry-run (snakemake -n)':<{width}} {'jobs':>7} {'CPU s':>8} {'CPU ms/job':>11} {'wall s':>8}")
        print(f"{'diffunlearn (ours)':<{width}} {n_ours:>7} {c_ours:>8.1f} {1000 * c_ours / n_ours:>11.2f} {w_ours:>8.1f}")
        for kind, (cpu, wall) in bare.items():
            print(f"{BARE_LABELS[kind]:<{width}} {n_ours:>7} {cpu:>8.1f} {1000 * cpu / n_ours:>11.2f} {wall:>8.1f}")
        print(f"ratio ours / bare shell (CPU per job): {c_ours / bare['shell'][0]:.2f} (goal <= 1.5); "
              f"ours / bare script: {c_ours / bare['script'][0]:.2f}; "
              f"ours / bare declared: {c_ours / bare['declared'][0]:.2f}; "
              f"bare declared / bare shell: {bare['declared'][0] / bare['shell'][0]:.2f}")

        if args.profile:
            prof = tmp / "ours.prof"
            env = dict(os.environ, PYTHONPATH=str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""))
            subprocess.run([sys.executable, "-m", "cProfile", "-o", str(prof)] + ours_cmd[1:], cwd=ROOT, env=env,
                           capture_output=True, check=True)
            import pstats

            stats = pstats.Stats(str(prof))
            entries = []
            for (filename, line, func), (_cc, nc, tt, ct, _) in stats.stats.items():
                entries.append((ct, tt, nc, filename, line, func))
            print("\ntop functions defined in workflow/ (cumulative s, own s, calls):")
            ours_entries = sorted((e for e in entries if "workflow/rules" in e[3] or e[3].endswith("Snakefile")),
                                  reverse=True)[:15]
            for ct, tt, nc, filename, line, func in ours_entries:
                print(f"  {ct:8.2f} {tt:8.2f} {nc:9d}  {os.path.relpath(filename, ROOT)}:{line} {func}")
            print("\ntop functions overall (cumulative s):")
            stats.sort_stats("cumulative").print_stats(25)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
