"""Speed-only switches: how a computation runs, never what it computes.

``compile`` (torch.compile), ``channels_last`` (NHWC weights and activations), ``cuda_graphs`` and
``fused_adamw`` change results by no more than float tolerance (tests/test_fastpath.py), so they are not
part of a run's fingerprint and never job params: :func:`job_params` drops them from the params a rule
declares, and a job script reads them back from the config with :func:`with_speed_keys`, so switching one
re-runs nothing. Each takes true, false or "auto" (:func:`resolve_switch`; compile for inference: :func:`resolve_compile`). :func:`fast_inference`
is the one eval / channels_last / compile / restore sequence of sampling and margins.
"""
from __future__ import annotations

from contextlib import contextmanager

# The speed-only keys of each config section.
SPEED_KEYS = {
    "train": ("compile", "channels_last", "fused_adamw"),
    "sampling": ("compile", "cuda_graphs", "channels_last"),
    "margins": ("compile", "channels_last"),
}
# The train section's: excluded from a training run's fingerprint (resuming across a switch is allowed).
FAST_PATH_KEYS = SPEED_KEYS["train"]


def job_params(section: str, cfg: dict) -> dict:
    """``cfg`` (a config section) without its speed-only keys: what a rule may declare as params."""
    return {k: v for k, v in cfg.items() if k not in SPEED_KEYS[section]}


def with_speed_keys(section: str, params: dict, config: dict) -> dict:
    """A job's params with the speed-only keys of ``config[section]`` added back (in the job script)."""
    own = config.get(section) or {}
    return {**params, **{k: own[k] for k in SPEED_KEYS[section] if k in own}}


def resolve_switch(value, device) -> bool:
    """A fast-path switch of the config: true, false or "auto" (on for CUDA devices, off elsewhere)."""
    if value in (None, "auto"):
        return str(device).startswith("cuda")
    return bool(value)


def fast_path(cfg: dict, device) -> dict:
    """The resolved training switches: "auto" turns compile and channels_last on for CUDA only (on the CPU they
    cost more than they save) and fused AdamW on wherever torch has it (CPU and CUDA)."""
    out = {key: resolve_switch(cfg.get(key, "auto"), device) for key in ("compile", "channels_last")}
    fused = cfg.get("fused_adamw", "auto")
    out["fused_adamw"] = str(device).split(":")[0] in ("cpu", "cuda") if fused in (None, "auto") else bool(fused)
    return out


# torch.compile of a UNet takes 10 to 30 s on a CPU and then makes its forward 1.1x (a 32x32 UNet near the
# CPU's peak) to 1.5x (the embedded default's 8x8 one) faster (BENCHMARKS.md): it pays once a job's forwards
# would run for minutes, not in the embedded default's few-second jobs.
CPU_COMPILE_PAYS_AFTER_S = 300.0


def estimated_cpu_seconds(unet, inputs: int) -> float:
    """Seconds of ``inputs`` forwards of ``unet`` (one image each) at half this CPU's fp32 peak."""
    from diffunlearn.flops import cpu_peak_flops, forward_flops

    channels, size = unet.config.in_channels, unet.config.sample_size
    return forward_flops(unet, (1, channels, size, size)) * inputs / (0.5 * cpu_peak_flops())


def resolve_compile(value, device, unet=None, inputs: int = 0) -> bool:
    """The compile switch of sampling and margins: true, false or "auto".

    "auto": on for CUDA; on the CPU on when the job's ``inputs`` forwards of ``unet`` are estimated
    (:func:`estimated_cpu_seconds`) to run longer than ``CPU_COMPILE_PAYS_AFTER_S``; off elsewhere.
    """
    if value not in (None, "auto") or str(device).startswith("cuda"):
        return resolve_switch(value, device)
    if str(device) != "cpu" or unet is None or inputs <= 0:
        return False
    return estimated_cpu_seconds(unet, inputs) > CPU_COMPILE_PAYS_AFTER_S


def compile_module(module, *, cuda_graphs: bool = False, inference: bool = False):
    """``torch.compile`` for one fixed input shape.

    ``cuda_graphs``: replay each call as a CUDA graph (inductor's cudagraphs, as mode "reduce-overhead").
    ``inference``: the weights do not change (sampling, margins), so inductor may fold them into the graph
    ("freezing": prepacked convolution weights on the CPU). The backend is inductor unless
    ``DIFFUNLEARN_COMPILE_BACKEND`` names another (tests use aot_eager, which traces the same graphs
    without generating code).
    """
    import os

    import torch

    backend = os.environ.get("DIFFUNLEARN_COMPILE_BACKEND", "inductor")
    if backend != "inductor":
        return torch.compile(module, dynamic=False, backend=backend)
    options = {}
    if cuda_graphs:
        options["triton.cudagraphs"] = True
    if inference:
        options["freezing"] = True
    return torch.compile(module, dynamic=False, options=options or None)


@contextmanager
def fast_inference(unet, *, compile: bool = False, cuda_graphs: bool = False, channels_last: bool = False):
    """Yield the module to call for inference: ``unet`` in eval mode, NHWC weights if ``channels_last``,
    compiled (frozen weights) if ``compile``; afterwards ``unet`` gets back its memory format and mode."""
    import torch

    was_training = unet.training
    unet.eval()
    if channels_last:
        unet.to(memory_format=torch.channels_last)
    try:
        yield compile_module(unet, cuda_graphs=cuda_graphs, inference=True) if compile else unet
    finally:
        if channels_last:
            unet.to(memory_format=torch.contiguous_format)
        unet.train(was_training)


_ALLOCATOR_TUNED = False


def tune_cpu_allocator() -> bool:
    """Let glibc keep freed memory for reuse (CPU fast path); returns whether the setting is in effect.

    By default glibc serves blocks of 128 KB and more by mmap and gives them back on free (and trims the
    heap), so the megabyte-sized activations of a batched UNet forward are page-faulted in anew on every
    call: thousands of faults per forward, 15-30 % of a CPU forward at a batch of 256 8x8 images. Serving
    blocks up to 32 MB from the heap and never trimming it removes them; the cost is that the process
    keeps its peak heap. Process-wide and idempotent; ``DIFFUNLEARN_MALLOC_TUNE=0`` turns it off.
    """
    global _ALLOCATOR_TUNED
    import os
    import sys

    if _ALLOCATOR_TUNED or os.environ.get("DIFFUNLEARN_MALLOC_TUNE", "1") == "0" or not sys.platform.startswith("linux"):
        return _ALLOCATOR_TUNED
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        _ALLOCATOR_TUNED = bool(libc.mallopt(m_mmap_threshold, 32 << 20)) and bool(libc.mallopt(m_trim_threshold, 1 << 30))
    except (OSError, AttributeError):  # not glibc
        _ALLOCATOR_TUNED = False
    return _ALLOCATOR_TUNED
