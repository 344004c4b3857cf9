"""Dry-run cost of a paper-scale DAG: our workflow against a bare Snakemake DAG of as many trivial jobs.

On SLURM the Snakefile is evaluated again in every job, and every `snakemake -n` / re-plan after a failure
builds the whole DAG, so the per-job cost of planning matters at 40 000 jobs. This script, in one run:

1. `snakemake -n --quiet rules` of config/cifar10_klom.yaml (the data need not exist: nothing reads it
   while planning) -> number of jobs, wall seconds, seconds per job;
2. the same command on a throwaway Snakefile (temp dir) with the same number of trivial jobs
   (N-1 independent `touch` jobs and an `all` rule) -> Snakemake's own cost per job;
3. the ratio (goal: at most 1.5).

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
    {action}
"""
BARE_ACTIONS = {
    "shell": 'shell:\n        "touch {{output}}"',
    # Snakemake 9 opens and checks a rule's `script:` once per job while planning (ScriptProcessor):
    # this variant shows that part of the cost, which every workflow built from script rules pays
    "script": 'script:\n        "touch.py"',
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
                    help="rounds of the three dry-runs (interleaved); the minimum of each is reported")
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
        # Rounds of (ours, bare shell:, bare script:), the minimum of each over the rounds: on a shared
        # machine the load changes within minutes and inflates CPU time too (shared cores and caches), so
        # each round measures all three under about the same load.
        ours, runs, n_ours, bare_cmds = [], {kind: [] for kind in BARE_ACTIONS}, None, {}
        for _ in range(args.repeat):
            wall, cpu, n_ours, out = dry_run(ours_cmd, ROOT)
            ours.append((cpu, wall))
            for kind, action in BARE_ACTIONS.items():
                d = bare_dir / kind
                if kind not in bare_cmds:
                    d.mkdir()
                    (d / "touch.py").write_text("open(snakemake.output[0], 'w').close()\n")
                    (d / "Snakefile").write_text(BARE_SNAKEFILE.format(
                        n=n_ours - 1, action=action.replace("{{", "{").replace("}}", "}")))
                    bare_cmds[kind] = snakemake + ["-n", "--quiet", "rules", "--cores", "1", "--snakefile",
                                                   str(d / "Snakefile"), "--directory", str(d)]
                wall, cpu, n_bare, _ = dry_run(bare_cmds[kind], d)
                assert n_bare == n_ours, (n_bare, n_ours)
                runs[kind].append((cpu, wall))
        table = job_table(out)
        bare = {kind: min(r) for kind, r in runs.items()}

        (c_ours, w_ours), (c_bare, w_bare) = min(ours), bare["shell"]
        c_script, w_script = bare["script"]
        import snakemake

        print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, python {platform.python_version()}, "
              f"snakemake {getattr(snakemake, '__version__', '?')}, load average {os.getloadavg()[0]:.1f}")
        print(f"config: {args.configfile}\n{table}\n")
        print(f"{'dry-run (snakemake -n)':<32} {'jobs':>7} {'CPU s':>8} {'CPU ms/job':>11} {'wall s':>8}")
        print(f"{'diffunlearn (ours)':<32} {n_ours:>7} {c_ours:>8.1f} {1000 * c_ours / n_ours:>11.2f} {w_ours:>8.1f}")
        print(f"{'bare Snakemake, trivial shell:':<32} {n_bare:>7} {c_bare:>8.1f} {1000 * c_bare / n_bare:>11.2f} {w_bare:>8.1f}")
        print(f"{'bare Snakemake, trivial script:':<32} {n_bare:>7} {c_script:>8.1f} {1000 * c_script / n_bare:>11.2f} {w_script:>8.1f}")
        print(f"ratio ours / bare shell (CPU per job): {c_ours / c_bare:.2f} (goal <= 1.5); "
              f"ours / bare script: {c_ours / c_script:.2f}")

        if args.profile:
            prof = tmp / "ours.prof"
            env = dict(os.environ, PYTHONPATH=str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""))
            subprocess.run([sys.executable, "-m", "cProfile", "-o", str(prof)] + ours_cmd[1:], cwd=ROOT, env=env,
                           capture_output=True, check=True)
            import pstats

            stats = pstats.Stats(str(prof))
            entries = []
            for (filename, line, func), (cc, nc, tt, ct, _) in stats.stats.items():
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
