"""Influence unlearning (iu): one WoodFisher step, as the attribution paper ports it from Unlearn-Sparse.

With the forget set F (n_f examples), the retain set R (n_r) and the denoising loss l(w; x) (one (t, noise)
draw per example, fixed by ``unlearning.iu.seed``)::

    v      = n_f / (n_f + n_r) * (mean_F grad l - mean_R grad l)        (Unlearn-Sparse's forget / retain weights)
    Fisher = damping * I + (1/N) sum_k g_k g_k^T                        g_k: per-sample retain gradients, N of them
    w     <- w + ratio * Fisher^-1 v

``Fisher^-1 v`` is computed without the d x d matrix by N rank-one Sherman-Morrison (Woodbury) updates of
``damping^-1 I``: with u_k = Fisher_{k-1}^-1 g_k and c_k = N + g_k . u_k,
``Fisher_k^-1 x = Fisher_{k-1}^-1 x - u_k (u_k . x) / c_k``. It stores the N vectors u_k (N x d floats) and
costs O(N^2 d). Unlearn-Sparse's loop starts from the identity (damping 1) and, unlike this, carries only the
first gradient's vector through the updates; this is the exact product (tests/test_influence.py checks it
against numpy's inverse of the dense Fisher).
"""
from __future__ import annotations


def draws(n: int, shape, num_timesteps: int, generator):
    """One (timestep, noise) pair per example, from ``generator`` (CPU)."""
    import torch

    t = torch.randint(0, num_timesteps, (n,), generator=generator)
    noise = torch.randn((n, *shape), generator=generator)
    return t, noise


def denoising_loss(model, x0, t, noise, alphas_cumprod):
    """Mean epsilon-prediction MSE of ``model`` on x0 noised at t with ``noise`` (all on the model's device)."""
    import torch

    a = alphas_cumprod[t].view(-1, 1, 1, 1)
    noise = noise.to(x0.dtype)
    x_t = a.sqrt() * x0 + (1 - a).sqrt() * noise
    out = model(x_t, t)
    pred = out.sample if hasattr(out, "sample") else out
    pred = pred.to(torch.promote_types(pred.dtype, torch.float32))  # half precision up to fp32, fp64 kept
    return torch.nn.functional.mse_loss(pred, noise, reduction="none").flatten(1).mean(1)


def flat_grad(loss, params):
    import torch

    grads = torch.autograd.grad(loss, params, allow_unused=True)
    return torch.cat([(torch.zeros_like(p) if g is None else g).reshape(-1) for g, p in zip(grads, params)])


def mean_gradient(model, x0, t, noise, alphas_cumprod, batch_size: int):
    """The gradient of the mean denoising loss over the examples (summed per batch, so batching changes nothing)."""
    params = [p for p in model.parameters()]
    total = None
    for s in range(0, len(x0), batch_size):
        sl = slice(s, s + batch_size)
        g = flat_grad(denoising_loss(model, x0[sl], t[sl], noise[sl], alphas_cumprod).sum(), params)
        total = g if total is None else total + g
    return total / len(x0)


def per_sample_gradients(model, x0, t, noise, alphas_cumprod):
    """The gradient of each example's denoising loss, one at a time."""
    params = [p for p in model.parameters()]
    for i in range(len(x0)):
        yield flat_grad(denoising_loss(model, x0[i:i + 1], t[i:i + 1], noise[i:i + 1], alphas_cumprod).sum(), params)


def inverse_fisher_product(grads, v, damping: float, n: int):
    """(damping I + (1/n) sum_k g_k g_k^T)^-1 v by n rank-one Sherman-Morrison updates (``grads``: n vectors)."""
    us, cs = [], []
    for g in grads:
        u = g / damping
        for uk, ck in zip(us, cs):
            u = u - uk * (uk @ g) / ck
        us.append(u)
        cs.append(n + g @ u)
    x = v / damping
    for uk, ck in zip(us, cs):
        x = x - uk * (uk @ v) / ck
    return x


def apply_step(model, delta) -> None:
    """w += delta, ``delta`` flat in ``model.parameters()`` order."""
    import torch

    offset = 0
    with torch.no_grad():
        for p in model.parameters():
            p.add_(delta[offset:offset + p.numel()].view_as(p).to(p.dtype))
            offset += p.numel()


def influence_unlearn(model, forget, retain, alphas_cumprod, hp: dict) -> dict:
    """One WoodFisher step on ``model`` in place. ``forget`` / ``retain``: model-space tensors [N, C, H, W] on the
    model's device. Returns what the cost record keeps (sizes, norms of v and of the step)."""
    import torch

    n_params = sum(p.numel() for p in model.parameters())
    if n_params > hp["max_params"]:
        raise ValueError(f"unlearning.iu.max_params: the model has {n_params} parameters, more than {hp['max_params']} "
                         f"(the inverse-Fisher product stores num_retain x parameters floats)")
    device = forget.device
    g = torch.Generator().manual_seed(hp["seed"])
    pick_f = torch.randperm(len(forget), generator=g)[: hp["num_forget"] or len(forget)]
    pick_w = torch.randperm(len(retain), generator=g)[: hp["num_retain"]]
    T = len(alphas_cumprod)
    f_t, f_noise = draws(len(pick_f), forget.shape[1:], T, g)
    r_t, r_noise = draws(len(retain), retain.shape[1:], T, g)
    model.eval()
    x_f, x_r = forget[pick_f.to(device)], retain
    grad_f = mean_gradient(model, x_f, f_t.to(device), f_noise.to(device), alphas_cumprod, hp["batch_size"])
    grad_r = mean_gradient(model, x_r, r_t.to(device), r_noise.to(device), alphas_cumprod, hp["batch_size"])
    n_f, n_r = len(pick_f), len(retain)
    v = n_f / (n_f + n_r) * (grad_f - grad_r)
    w_idx = pick_w.to(device)
    grads = per_sample_gradients(model, x_r[w_idx], r_t[pick_w].to(device), r_noise[pick_w].to(device), alphas_cumprod)
    delta = hp["ratio"] * inverse_fisher_product(grads, v, hp["damping"], len(pick_w))
    apply_step(model, delta)
    return {"forget_examples": n_f, "retain_examples": n_r, "fisher_examples": len(pick_w),
            "direction_norm": float(v.norm()), "step_norm": float(delta.norm())}


def influence_checkpoint(out_dir, source, forget, retain, diffusion_cfg: dict, hp: dict, device, extra_state: dict):
    """The iu job: the source checkpoint's EMA model, one WoodFisher step, written as ``checkpoint-1`` (the
    updated weights as both raw and EMA). ``forget`` / ``retain``: the job's arrays (images or latents).
    Returns the checkpoint's state."""
    import time
    from pathlib import Path

    from diffunlearn.checkpoint import load_ema_unet, save_checkpoint
    from diffunlearn.data import to_model_space
    from diffunlearn.models import build_scheduler

    unet = load_ema_unet(source).to(device)
    scheduler = build_scheduler(diffusion_cfg)
    start = time.perf_counter()
    record = influence_unlearn(unet, to_model_space(forget).to(device), to_model_space(retain).to(device),
                               scheduler.alphas_cumprod.to(device), hp)
    state = {"step": 1, "seed": hp["seed"], "wall_seconds": time.perf_counter() - start, "loss_log": [],
             "examples_seen": record["forget_examples"] + record["retain_examples"] + record["fisher_examples"],
             "device": str(device), "influence": record, **extra_state}
    save_checkpoint(Path(out_dir) / "checkpoint-1", ema_unet=unet, raw_unet=unet, scheduler=scheduler,
                    optimizer_state={"state": {}, "param_groups": []}, state=state)
    return state
