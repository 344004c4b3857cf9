"""Model FLOPs of a training step (and of an inference forward) and model FLOPs utilisation (MFU) against a device's peak.

FLOPs are counted by torch's own counter (``torch.utils.flop_counter.FlopCounterMode``) on a copy
of the model on the meta device, so counting costs no compute: one forward and backward of the
denoising loss on a batch. Attention is counted as its two matrix products (forward) and four
(backward), the usual "model FLOPs" convention (a kernel that recomputes, like flash attention's
backward, does more work than is counted). Elementwise work (norms, activations, the optimizer) is
not counted, as is usual for MFU.
"""
from __future__ import annotations

import copy
import os

# Dense peak throughput in TFLOP/s (no sparsity), per precision, from the vendors' data sheets
# (SXM parts where there are several). "tf32" is what fp32 convolutions and matmuls run at on
# NVIDIA GPUs from Ampere on when torch allows TF32 (cuDNN convolutions do by default).
PEAK_TFLOPS = {
    "H200": {"bf16": 989.0, "fp16": 989.0, "tf32": 494.0, "fp32": 67.0},
    "H100": {"bf16": 989.0, "fp16": 989.0, "tf32": 494.0, "fp32": 67.0},
    "A100": {"bf16": 312.0, "fp16": 312.0, "tf32": 156.0, "fp32": 19.5},
    "L40S": {"bf16": 362.0, "fp16": 362.0, "tf32": 183.0, "fp32": 91.6},
    "A10": {"bf16": 125.0, "fp16": 125.0, "tf32": 62.5, "fp32": 31.2},
    "RTX 4090": {"bf16": 165.2, "fp16": 165.2, "tf32": 82.6, "fp32": 82.6},
    "V100": {"fp16": 125.0, "fp32": 15.7, "tf32": 15.7},
}


def train_step_flops(unet, batch_shape) -> int:
    """FLOPs of one forward + backward of the denoising loss of ``unet`` on a batch of shape [B, C, H, W].

    Multiply by the micro-batches of an optimizer step (gradient accumulation, several objectives).
    """
    return _count_flops(unet, batch_shape, train=True)


def forward_flops(unet, batch_shape) -> int:
    """FLOPs of one inference forward of ``unet`` on a batch of shape [B, C, H, W] (a sampling step, a
    margins chunk)."""
    return _count_flops(unet, batch_shape, train=False)


def _count_flops(unet, batch_shape, train: bool) -> int:
    """One forward (and, for ``train``, the backward of an MSE loss) of a meta-device copy, counted."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    meta = _meta_copy(unet).train(train)
    x = torch.zeros(tuple(batch_shape), device="meta")
    t = torch.zeros(batch_shape[0], dtype=torch.long, device="meta")
    with FlopCounterMode(display=False) as counter, torch.set_grad_enabled(train):
        out = meta(x, t)
        if train:
            pred = out.sample if hasattr(out, "sample") else out
            torch.nn.functional.mse_loss(pred.float(), x).backward()
    return int(counter.get_total_flops())


def _meta_copy(module):
    import torch

    if hasattr(module, "config") and hasattr(type(module), "from_config"):
        with torch.device("meta"):
            meta = type(module).from_config(module.config)
        shapes = {k: v.shape for k, v in module.state_dict().items()}
        if {k: v.shape for k, v in meta.state_dict().items()} == shapes:
            return meta
        # a pruned model (diffunlearn.prune): its layers no longer match its config
    return copy.deepcopy(module).to("meta")


def mfu(flops_per_step: float, steps_per_second: float, peak_flops: float | None) -> float | None:
    """Model FLOPs utilisation: achieved FLOP/s over the device's peak FLOP/s (None without a peak)."""
    if not peak_flops:
        return None
    return flops_per_step * steps_per_second / peak_flops


def precision_of(mixed_precision: str, device) -> str:
    """The peak-table precision of a run: bf16 / fp16 under autocast; fp32 runs use TF32 on CUDA if torch allows it."""
    if mixed_precision in ("bf16", "fp16"):
        return mixed_precision
    if str(device).startswith("cuda"):
        import torch

        return "tf32" if torch.backends.cudnn.allow_tf32 else "fp32"
    return "fp32"


def gpu_peak_flops(name: str, precision: str) -> float | None:
    """Peak FLOP/s of a GPU from its name (e.g. torch.cuda.get_device_name()), or None if not in the table."""
    upper = name.upper()
    for key in sorted(PEAK_TFLOPS, key=len, reverse=True):  # "A100" before "A10"
        if key.upper() in upper:
            value = PEAK_TFLOPS[key].get(precision)
            return value * 1e12 if value else None
    return None


def cpu_peak_flops(threads: int | None = None, ghz: float | None = None, flops_per_cycle: int | None = None) -> float:
    """An estimate of a CPU's fp32 peak: threads x clock x FLOPs per cycle per core.

    FLOPs per cycle default from the instruction set: 64 with AVX-512 (two 16-wide FMA units),
    32 with AVX2 + FMA or on AMD Zen 4 (family 25, which runs AVX-512 on 256-bit units), 8
    otherwise. The clock defaults to /proc/cpuinfo's "cpu MHz" (the base clock, not the boost).
    """
    import torch

    threads = threads or torch.get_num_threads()
    info = {}
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                info.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    flags = set(info.get("flags", "").split())
    if ghz is None:
        ghz = float(info.get("cpu MHz") or 2500.0) / 1000.0
    if flops_per_cycle is None:
        zen4 = info.get("vendor_id") == "AuthenticAMD" and info.get("cpu family") == "25"
        if "avx512f" in flags and not zen4:
            flops_per_cycle = 64
        elif "avx2" in flags and "fma" in flags:
            flops_per_cycle = 32
        else:
            flops_per_cycle = 8
    return threads * ghz * 1e9 * flops_per_cycle


def device_peak_flops(device, precision: str = "fp32") -> float | None:
    """Peak FLOP/s of ``device`` at ``precision``: the GPU table, the CPU estimate, or None.

    ``DIFFUNLEARN_PEAK_TFLOPS`` overrides it (a number in TFLOP/s), for devices not in the table.
    """
    override = os.environ.get("DIFFUNLEARN_PEAK_TFLOPS")
    if override:
        return float(override) * 1e12
    device = str(device)
    if device.startswith("cuda"):
        import torch

        return gpu_peak_flops(torch.cuda.get_device_name(torch.device(device)), precision)
    if device == "cpu":
        return cpu_peak_flops() if precision == "fp32" else None
    return None
