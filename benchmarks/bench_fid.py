"""FID speed: ours (in-memory uint8 samples) against pytorch-fid's CLI (PNG folders), same images and weights.

    python benchmarks/bench_fid.py --n 2000 --size 32 [--weights FILE] [--device cpu]

Makes ``n`` structured random images (two sets of n/2 that differ), writes them as PNG folders for
pytorch-fid and as ``.npz`` samples for us, then runs, each in a fresh process:
  pytorch-fid: ``python -m pytorch_fid DIR_A DIR_B --device D`` (its default batch size and workers)
  ours:        ``python -m diffunlearn fid A.npz B.npz --device D``
and prints wall and CPU seconds for each, the ratio, both FIDs and their relative difference.
Then, in this process, it splits the time: Inception forward (both networks, same batch) and
``tr sqrtm`` (scipy ``sqrtm``, as pytorch-fid, against our eigenvalue route).

Without ``--weights`` a random FID-Inception weights file stands in (offline machines); speed does
not depend on the values. The file is put where torch.hub (and so pytorch-fid) looks for it.
"""
from __future__ import annotations

import argparse
import os
import platform
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))


def structured_images(n: int, size: int, seed: int, tint: float) -> np.ndarray:
    """uint8 NHWC: smooth gradients, a Gaussian blob and mild noise per image; ``tint`` shifts colours."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    coef = rng.uniform(-1, 1, (n, 3, 1, 1))
    centre = rng.uniform(0.2, 0.8, (n, 2, 1, 1))
    radius = rng.uniform(0.1, 0.3, (n, 1, 1))
    blob = np.exp(-((yy - centre[:, 0]) ** 2 + (xx - centre[:, 1]) ** 2) / radius**2)
    base = 0.5 + 0.3 * (coef[:, 0] * xx + coef[:, 1] * yy) + 0.4 * coef[:, 2] * blob
    rgb = np.stack([base, base * (1 - tint) + tint * xx, base * (1 - tint) + tint * (1 - yy)], -1)
    rgb += rng.normal(0, 0.05, rgb.shape)
    return np.clip(rgb * 255, 0, 255).astype(np.uint8)


def write_pngs(folder: Path, images: np.ndarray) -> None:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i, im in enumerate(images):
        Image.fromarray(im).save(folder / f"{i:05d}.png")


def timed_run(cmd: list[str], env: dict) -> tuple[float, float, str]:
    """Wall seconds, CPU seconds (user + sys of the process and its children) and stdout."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, proc.stdout


def parse_fid(stdout: str) -> float:
    return float(re.findall(r"FID:\s+(\S+)", stdout)[-1])


def machine() -> str:
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} logical CPUs, load average {os.getloadavg()[0]:.2f}"


def versions() -> str:
    import importlib.metadata as md

    return ", ".join(f"{p} {md.version(p)}" for p in ("torch", "torchvision", "pytorch-fid", "scipy", "numpy", "pillow"))


def split_times(weights: Path, images: np.ndarray, device: str, batch: int = 50) -> dict:
    """Per-image forward seconds (pytorch-fid's module vs ours) and tr sqrtm seconds (scipy vs eig)."""
    import torch
    from pytorch_fid.inception import InceptionV3
    from scipy import linalg

    from diffunlearn.metrics.fid import RunningStats, trace_sqrt_product
    from diffunlearn.metrics.inception import load_inception, to_float_nchw

    ref = InceptionV3([3]).eval().to(device)
    ours = load_inception(weights, device)
    x = images[: 2 * batch]
    with torch.no_grad():
        ref(to_float_nchw(x[:batch]).to(device))
    ours.features_and_logits(x[:batch], batch)
    t0 = time.perf_counter()
    with torch.no_grad():
        for i in range(0, len(x), batch):
            ref(to_float_nchw(x[i : i + batch]).to(device))
    t_ref = (time.perf_counter() - t0) / len(x)
    t0 = time.perf_counter()
    feats, _ = ours.features_and_logits(x, len(x))
    t_ours = (time.perf_counter() - t0) / len(x)

    rng = np.random.default_rng(0)  # covariances of realistic rank: 1000 samples, 2048 dims
    s = [RunningStats(2048).update(f).cov() for f in (rng.gamma(1.5, 0.3, (1000, 2048)), rng.gamma(1.4, 0.3, (1000, 2048)))]
    t0 = time.perf_counter()
    linalg.sqrtm(s[0] @ s[1])
    t_sqrtm = time.perf_counter() - t0
    t0 = time.perf_counter()
    trace_sqrt_product(s[0], s[1])
    t_eig = time.perf_counter() - t0
    return {"forward_ref": t_ref, "forward_ours": t_ours, "sqrtm": t_sqrtm, "eig": t_eig, "batch_ours": len(x)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=2000, help="images in all (two sets of n/2)")
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--weights", default=None, help="FID-Inception weights file (default: random, offline)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--keep", default=None, help="keep the work folder here")
    p.add_argument("--no-split", action="store_true", help="skip the in-process time split")
    args = p.parse_args(argv)

    work = Path(args.keep or tempfile.mkdtemp(prefix="bench_fid_"))
    hub = work / "torch" / "hub" / "checkpoints"
    hub.mkdir(parents=True, exist_ok=True)
    from diffunlearn.metrics.inception import WEIGHTS_FILENAME
    from diffunlearn.metrics.testing import write_random_fid_weights

    weights = hub / WEIGHTS_FILENAME
    if args.weights:
        shutil.copyfile(args.weights, weights)
    elif not weights.exists():
        write_random_fid_weights(weights, seed=0)
    env = dict(os.environ, TORCH_HOME=str(work / "torch"), PYTHONPATH=str(REPO / "src"))

    half = args.n // 2
    a = structured_images(half, args.size, seed=1, tint=0.0)
    b = structured_images(args.n - half, args.size, seed=2, tint=0.5)
    for name, imgs in (("a", a), ("b", b)):
        if not (work / name).is_dir():
            write_pngs(work / name, imgs)
        np.savez(work / f"{name}.npz", images=imgs)

    print(f"machine: {machine()}")
    print(f"versions: python {platform.python_version()}, {versions()}")
    print(f"images: {args.n} ({half} vs {args.n - half}) at {args.size}x{args.size}x3, device {args.device}, weights {weights}")
    ours_cmd = [sys.executable, "-m", "diffunlearn", "fid", str(work / "a.npz"), str(work / "b.npz"), "--device", args.device]
    ref_cmd = [sys.executable, "-m", "pytorch_fid", str(work / "a"), str(work / "b"), "--device", args.device]
    w_ours, c_ours, out_ours = timed_run(ours_cmd, env)
    print(f"ours        wall {w_ours:8.1f} s  cpu {c_ours:8.1f} s  FID {parse_fid(out_ours):.10g}", flush=True)
    w_ref, c_ref, out_ref = timed_run(ref_cmd, env)
    print(f"pytorch-fid wall {w_ref:8.1f} s  cpu {c_ref:8.1f} s  FID {parse_fid(out_ref):.10g}", flush=True)
    f_ours, f_ref = parse_fid(out_ours), parse_fid(out_ref)
    rel = abs(f_ours - f_ref) / abs(f_ref)
    print(f"speed-up (pytorch-fid / ours): wall {w_ref / w_ours:.2f}x, cpu {c_ref / c_ours:.2f}x")
    print(f"FID relative difference: {rel:.2e} ({'agree' if rel < 1e-4 else 'DISAGREE'} at 1e-4)")
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    if not args.no_split:
        os.environ["TORCH_HOME"] = env["TORCH_HOME"]
        s = split_times(weights, a, args.device)
        print(f"split: forward s/image pytorch-fid module (batch 50, no_grad) {s['forward_ref']:.4f}, "
              f"ours (batch {s['batch_ours']}) {s['forward_ours']:.4f}; tr sqrtm at 2048: "
              f"scipy sqrtm {s['sqrtm']:.1f} s, ours (eigh) {s['eig']:.1f} s")
    return 0 if rel < 1e-4 else 1


if __name__ == "__main__":
    raise SystemExit(main())
