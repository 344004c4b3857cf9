"""What one training step optimises: the pluggable pieces of the training engine (:mod:`diffunlearn.train`).

The engine's loop never changes; a run chooses

- a **schedule** of terms, ``step -> [(source, sign), ...]`` (:data:`Schedule`): which data source each
  micro-batch comes from and whether its loss is descended (+1) or ascended (-1, gradient ascent on a forget
  set). The unlearning methods are such schedules (:func:`diffunlearn.unlearn.objective`);
- a **loss** (:class:`Loss`): ``loss(ctx, batch, generator) -> scalar``, one micro-batch's loss. The
  default, :class:`DenoisingLoss`, is the DDPM objective (epsilon MSE at sampled timesteps); a loss that
  needs a frozen reference model reads ``ctx.reference``, one that needs paired batches (winners and losers
  sharing t and noise) reads a second source with ``batch.take(name)`` (same rows, same flips);
- a **timestep sampler** (:class:`TimestepSampler`): draws the timesteps of a batch, may learn from the
  per-example losses (``observe``) and saves what it learned in every checkpoint (``state_dict``), so that a
  resumed run continues exactly;
- a **weighting**: a tensor of one weight per timestep (length T), or None for the plain mean.

Every random draw of a step comes from the generator the engine passes in (seeded by the run's seed and
the step), in a fixed order: flips, then the sampler's timesteps, then the noise. Draws are made for the
global batch and sliced to this process's rows (``ctx.part``), so data parallel runs draw the same numbers.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

# step -> the (data source, sign) pairs whose losses are summed at that step.
Schedule = Callable[[int], list[tuple[str, float]]]


def descend_on(name: str) -> Schedule:
    return lambda step: [(name, 1.0)]


@dataclass
class StepContext:
    """What a loss may read: the model's forward (under autocast), the noise schedule, this process's rows."""

    forward: Callable  # (x_t, t) -> predicted noise, under the run's autocast
    alphas_cumprod: Any  # tensor [T] on the device
    num_train_timesteps: int
    device: Any
    part: slice  # this process's rows of the global batch
    sampler: TimestepSampler
    weights: Any = None  # tensor [T] of per-timestep loss weights, or None (plain mean)
    reference: Callable | None = None  # frozen reference model's forward (no grad), or None
    step: int = 0
    extras: dict = field(default_factory=dict)  # room for a loss's own per-run objects


@dataclass
class Batch:
    """One micro-batch of a source: the global batch's indices, this process's rows, its random flips."""

    source: str
    x0: Any  # this process's rows, flipped, in model space [n, C, H, W]
    n_global: int
    take: Callable[[str], Any]  # another source's rows at the same indices with the same flips


class TimestepSampler(Protocol):
    def sample(self, n: int, generator) -> Any:
        """Timesteps (long tensor [n] on the generator's device) of a global batch of n examples."""

    def observe(self, t, losses) -> None:
        """Per-example losses (detached) at the timesteps drawn for this process's rows (called when the
        sampler's ``needs_losses`` is true, or when the loss is weighted). A sampler may also define
        ``weights(t)``: per-example factors multiplied into the loss (importance correction)."""

    def state_dict(self) -> dict:
        """JSON-serialisable state, saved in each checkpoint's state.json (empty: nothing saved)."""

    def load_state_dict(self, state: dict) -> None: ...


class UniformTimesteps:
    """t ~ U{0, ..., T-1}: the DDPM sampler. Stateless."""

    needs_losses = False

    def __init__(self, num_train_timesteps: int):
        self.num_train_timesteps = num_train_timesteps

    def sample(self, n: int, generator):
        import torch

        return torch.randint(0, self.num_train_timesteps, (n,), device=generator.device, generator=generator)

    def observe(self, t, losses) -> None:
        pass

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class Loss(Protocol):
    def __call__(self, ctx: StepContext, batch: Batch, generator) -> Any:
        """The micro-batch's scalar loss (the engine scales it by the term's sign and the accumulation)."""


def noisy(ctx: StepContext, x0, t, noise):
    """x_t = sqrt(a_t) x0 + sqrt(1 - a_t) noise (the forward process at timesteps t)."""
    a = ctx.alphas_cumprod[t].view(-1, 1, 1, 1)
    return a.sqrt() * x0 + (1 - a).sqrt() * noise


def draw_t_and_noise(ctx: StepContext, batch: Batch, generator):
    """The batch's timesteps and noise, drawn for the global batch and sliced to this process's rows."""
    import torch

    t = ctx.sampler.sample(batch.n_global, generator)[ctx.part]
    noise = torch.randn((batch.n_global, *batch.x0.shape[1:]), device=ctx.device, generator=generator)[ctx.part]
    return t, noise


def per_example_mse(pred, target):
    return ((pred.float() - target) ** 2).mean(dim=tuple(range(1, target.ndim)))


class DenoisingLoss:
    """The DDPM objective: MSE between the noise and its prediction, at timesteps from ``ctx.sampler``.

    With no weighting and a sampler that neither learns nor re-weights, this is ``mse_loss`` over all elements
    (the same numbers as before the engine had pluggable pieces); otherwise the mean over examples of the
    per-example MSE times ``ctx.weights[t]`` and the sampler's own weights ``sampler.weights(t)`` if it has
    them (e.g. 1 / (T p_t) of an importance sampler), and the sampler observes the per-example losses.
    """

    def __call__(self, ctx: StepContext, batch: Batch, generator):
        import torch

        t, noise = draw_t_and_noise(ctx, batch, generator)
        pred = ctx.forward(noisy(ctx, batch.x0, t, noise), t)
        reweights = hasattr(ctx.sampler, "weights")
        if ctx.weights is None and not reweights and not getattr(ctx.sampler, "needs_losses", True):
            return torch.nn.functional.mse_loss(pred.float(), noise)
        losses = per_example_mse(pred, noise)
        ctx.sampler.observe(t, losses.detach())
        if ctx.weights is not None:
            losses = losses * ctx.weights[t]
        if reweights:
            losses = losses * ctx.sampler.weights(t)
        return losses.mean()
