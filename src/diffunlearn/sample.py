"""Sampling a checkpoint: DDPM ancestral sampling (default) or DDIM, with fixed, model-independent noise.

DDPM runs on :class:`DDPMCoefficients`, the per-step coefficients of diffusers' ``DDPMScheduler.step``
(epsilon prediction, ``fixed_small`` / ``fixed_large`` variance, ``clip_sample``) computed once with the
scheduler's own float32 tensor arithmetic, so each step is six in-place tensor operations and one noise
draw instead of the scheduler's Python (timestep look-ups, ``nonzero``, fresh tensors). The result equals
``scheduler.step`` (tests/test_fastpath.py); any other scheduler or configuration goes through its ``step()``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from diffunlearn.speed import fast_inference, tune_cpu_allocator


def initial_noise(num_samples: int, shape: tuple[int, int, int], seed: int, start: int = 0, device="cpu"):
    """Starting noise of samples ``start .. start+num_samples``; sample i's noise depends only on (seed, i)."""
    import torch

    out = torch.empty((num_samples, *shape))
    g = torch.Generator()
    for row, i in enumerate(range(start, start + num_samples)):
        g.manual_seed(seed * 1_000_003 + i)
        torch.randn((1, *shape), generator=g, out=out[row : row + 1])
    return out.to(device)


@dataclass
class DDPMCoefficients:
    """Per inference step ``i`` (timestep ``timesteps[i]``), the scalars of ``DDPMScheduler.step``:

        x0   = clamp((x_t - sqrt_one_minus_alpha_bar[i] * eps) / sqrt_alpha_bar[i], -clip, clip)
        x_t' = coef_x0[i] * x0 + coef_xt[i] * x_t + std[i] * z     (z ~ N(0, I), drawn only where timesteps[i] > 0)

    Each is the float32 value diffusers computes (as a Python float, which torch applies in float32).
    """

    timesteps: list[int]
    sqrt_one_minus_alpha_bar: list[float]
    sqrt_alpha_bar: list[float]
    coef_x0: list[float]
    coef_xt: list[float]
    std: list[float]
    clip: float | None


def fast_ddpm_supported(scheduler) -> bool:
    """Whether :func:`ddpm_coefficients` reproduces this scheduler's ``step()``."""
    if type(scheduler).__name__ != "DDPMScheduler":
        return False
    c = scheduler.config
    return (c.prediction_type == "epsilon" and c.variance_type in ("fixed_small", "fixed_large")
            and not c.thresholding)


def ddpm_coefficients(scheduler) -> DDPMCoefficients:
    """The coefficients of every step of ``scheduler.timesteps`` (call ``set_timesteps`` first).

    Same float32 tensor expressions, in the same order, as ``DDPMScheduler.step`` and ``_get_variance``.
    """
    import torch

    if not fast_ddpm_supported(scheduler):
        raise ValueError("ddpm_coefficients needs a DDPMScheduler with epsilon prediction, fixed_small / "
                         "fixed_large variance and no thresholding")
    ac, one = scheduler.alphas_cumprod, scheduler.one
    timesteps = [int(t) for t in scheduler.timesteps]
    out = DDPMCoefficients(timesteps, [], [], [], [], [], scheduler.config.clip_sample_range if scheduler.config.clip_sample else None)
    for i, t in enumerate(timesteps):
        prev_t = timesteps[i + 1] if i + 1 < len(timesteps) else -1
        alpha_prod_t = ac[t]
        alpha_prod_t_prev = ac[prev_t] if prev_t >= 0 else one
        beta_prod_t = 1 - alpha_prod_t
        beta_prod_t_prev = 1 - alpha_prod_t_prev
        current_alpha_t = alpha_prod_t / alpha_prod_t_prev
        current_beta_t = 1 - current_alpha_t
        out.sqrt_one_minus_alpha_bar.append(float(beta_prod_t ** (0.5)))
        out.sqrt_alpha_bar.append(float(alpha_prod_t ** (0.5)))
        out.coef_x0.append(float((alpha_prod_t_prev ** (0.5) * current_beta_t) / beta_prod_t))
        out.coef_xt.append(float(current_alpha_t ** (0.5) * beta_prod_t_prev / beta_prod_t))
        if t > 0:
            # _get_variance: its own expression for beta_t, then the clamp
            variance_beta = 1 - alpha_prod_t / alpha_prod_t_prev
            variance = torch.clamp((1 - alpha_prod_t_prev) / (1 - alpha_prod_t) * variance_beta, min=1e-20)
            if scheduler.config.variance_type == "fixed_large":
                variance = variance_beta
            out.std.append(float(variance ** 0.5))
        else:
            out.std.append(0.0)
    return out


def ddpm_step_(x, eps, coefficients: DDPMCoefficients, i: int, noise=None, work=None):
    """One ancestral step in place on ``x`` (returned), as ``scheduler.step(eps, t_i, x).prev_sample``.

    ``noise``: the step's standard normal draw (needed where ``timesteps[i] > 0``; scaled in place).
    ``work``: an optional buffer shaped like ``x`` for the predicted x0 (no allocation then).
    """
    import torch

    c = coefficients
    x0 = torch.mul(eps, c.sqrt_one_minus_alpha_bar[i], out=work) if work is not None else eps * c.sqrt_one_minus_alpha_bar[i]
    torch.sub(x, x0, out=x0)
    x0.div_(c.sqrt_alpha_bar[i])
    if c.clip is not None:
        x0.clamp_(-c.clip, c.clip)
    x0.mul_(c.coef_x0[i])
    x.mul_(c.coef_xt[i]).add_(x0)
    if c.timesteps[i] > 0:
        x.add_(noise.mul_(c.std[i]))
    return x


def sample_images(unet, scheduler, num_samples: int, *, num_inference_steps: int, seed: int = 0,
                  batch_size: int = 256, eta: float = 0.0, device=None, progress=None,
                  compile: bool = False, cuda_graphs: bool = False, channels_last: bool = False,
                  decode=None) -> np.ndarray:
    """Run the reverse chain; return uint8 NHWC samples.

    Sample i starts from noise that depends only on (seed, i); the ancestral noise of every step is drawn
    from one generator per batch, seeded by (seed, batch). On the CPU the process's allocator keeps freed
    memory (:func:`tune_cpu_allocator`). ``compile``: ``torch.compile`` the UNet with frozen weights (the
    last batch is padded to ``batch_size`` so that one graph serves all; ``cuda_graphs``: each step
    replays a CUDA graph). ``channels_last``: NHWC activations and weights. None of them changes the
    result beyond float tolerance. ``decode``: maps each finished batch (model space, NCHW) to pixels in
    [-1, 1] before the uint8 conversion (latent diffusion: ``diffunlearn.latents.make_decoder``).
    """
    import torch

    from diffunlearn.data import to_uint8

    device = torch.device(device or next(unet.parameters()).device)
    if device.type == "cpu":
        tune_cpu_allocator()
    unet = unet.to(device)
    shape = (unet.config.in_channels, unet.config.sample_size, unet.config.sample_size)
    scheduler.set_timesteps(num_inference_steps)
    coefficients = ddpm_coefficients(scheduler) if fast_ddpm_supported(scheduler) else None
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    batch_size = min(batch_size, num_samples)
    out = []
    with fast_inference(unet, compile=compile, cuda_graphs=cuda_graphs, channels_last=channels_last) as model, \
            torch.inference_mode():
        for b in range(math.ceil(num_samples / batch_size)):
            start = b * batch_size
            n = min(batch_size, num_samples - start)
            rows = batch_size if compile else n  # compiled: every batch has one shape (padding rows at the end)
            x = torch.zeros((rows, *shape), device=device).contiguous(memory_format=memory_format)
            x[:n] = initial_noise(n, shape, seed, start=start, device=device)
            # Ancestral noise of every step is drawn from one generator per batch, seeded by (seed, batch).
            g = torch.Generator(device=device).manual_seed(seed * 7_777_777 + b)
            x = _reverse_chain(model, scheduler, coefficients, x, n, g, eta)
            out.append(to_uint8(decode(x) if decode is not None else x))  # latent diffusion: decoded to pixels
            if progress:
                progress(start + n)
    return np.concatenate(out)


def _reverse_chain(model, scheduler, coefficients, x, n: int, g, eta: float):
    """The reverse chain of one batch: ``x`` [rows, C, H, W] (noise in its first n rows, padding after) to the
    n samples, with the fused DDPM step given its ``coefficients``, else the scheduler's own ``step``."""
    import torch

    rows, shape = x.shape[0], x.shape[1:]
    timesteps = scheduler.timesteps.to(x.device)
    if coefficients is not None:
        noise = torch.zeros((rows, *shape), device=x.device)  # contiguous: noise[:n] is drawn as randn would
        work = torch.empty_like(x)
        for i, t in enumerate(timesteps):
            eps = model(x, t.expand(rows)).sample
            if coefficients.timesteps[i] > 0:
                noise[:n].normal_(generator=g)
            ddpm_step_(x, eps, coefficients, i, noise=noise, work=work)
        return x[:n]
    is_ddim = type(scheduler).__name__ == "DDIMScheduler"
    x = x[:n]
    for t in timesteps:
        x_in = x if rows == n else torch.cat([x, x.new_zeros((rows - n, *shape))])
        eps = model(x_in, t.expand(rows)).sample[:n]
        if is_ddim:
            x = scheduler.step(eps, t, x, eta=eta, generator=g).prev_sample
        else:
            x = scheduler.step(eps, t, x, generator=g).prev_sample
    return x
