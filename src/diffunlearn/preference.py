"""Preference fine-tuning of diffusion models (Diffusion-DPO, Wallace et al. 2023) and preference-based unlearning.

The losses are plain functions of per-example denoising losses (tensors of shape [batch]: the mean squared error
between the noise and its prediction, ``||eps - eps(x_t, t)||^2`` averaged over pixels), with the winner and the
loser of a pair sharing the timestep and the noise:

- :func:`dpo_loss`: ``mean -log sigmoid(-beta/2 * [(model_w - ref_w) - (model_l - ref_l)])``. The denoising loss
  stands in for the negative log-likelihood (Diffusion-DPO's bound), so the inside term is beta/2 times how much
  more the model than the reference prefers the winner over the loser. Its implicit accuracy is the fraction of
  pairs where the inside term is positive (a tie counts one half).
- :func:`sft_loss`: the plain denoising loss on the winners (supervised fine-tuning, Diffusion-DPO's baseline).
- :func:`npo_loss`: negative preference optimisation (Zhang et al. 2024, "Negative Preference Optimization: From
  Catastrophic Collapse to Effective Unlearning"): ``(2/beta) E log(1 + (pi_theta(y)/pi_ref(y))^beta)`` over the
  forget examples. With ``log pi ~ -denoising loss``, ``(pi_theta/pi_ref)^beta = exp(beta * (ref_f - model_f))``
  and the loss is ``(2/beta) * mean softplus(beta * (ref_f - model_f))``. Its gradient with respect to model_f is
  ``-2 sigmoid(beta * (ref_f - model_f)) / n``: at most 2 / n in magnitude and vanishing as the model's loss on the
  forget example grows past the reference's, where gradient ascent's (``-model_f``) stays at 1 / n forever.

:class:`PreferenceLoss` is the training engine's loss (:class:`diffunlearn.objectives.Loss`) for all three: it
reads the winners from the step's batch, the losers from a second source at the same rows
(``batch.take``), and the reference model's forward from ``ctx.reference``.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

from diffunlearn.objectives import UniformTimesteps, draw_t_and_noise, noisy, per_example_mse

MODES = ("dpo", "sft", "npo")


def dpo_inside(model_w, model_l, ref_w, ref_l, beta: float):
    """-beta/2 * [(model_w - ref_w) - (model_l - ref_l)], per pair (positive: the model prefers the winner more)."""
    return -0.5 * beta * ((model_w - ref_w) - (model_l - ref_l))


def dpo_loss(model_w, model_l, ref_w, ref_l, beta: float):
    """(loss, implicit accuracy) of Diffusion-DPO on per-example denoising losses [batch]; scalars."""
    import torch.nn.functional as F

    inside = dpo_inside(model_w, model_l, ref_w, ref_l, beta)
    accuracy = ((inside > 0).float() + 0.5 * (inside == 0).float()).mean()
    return -F.logsigmoid(inside).mean(), accuracy


def sft_loss(model_w):
    """Supervised fine-tuning on the winners: their mean denoising loss."""
    return model_w.mean()


def npo_loss(model_f, ref_f, beta: float):
    """NPO on forget examples: (2/beta) * mean softplus(beta * (ref_f - model_f)) (module docstring)."""
    import torch.nn.functional as F

    return (2.0 / beta) * F.softplus(beta * (ref_f - model_f)).mean()


def _denoising_losses(forward, ctx, x0, t, noise):
    return per_example_mse(forward(noisy(ctx, x0, t, noise), t), noise)


@dataclass
class PreferenceLoss:
    """The engine's loss for DPO / SFT (winners: the batch's source; losers: ``loser_source`` at the same rows) and
    NPO (the batch's source are the losers). Winner and loser share t and noise; t is uniform, as in
    Diffusion-DPO, whatever train.timesteps / train.loss_weighting say (their samplers and weights are not applied
    to these losses). Every call appends the detached loss, implicit accuracy and the model's and reference's mean
    denoising losses to ``history``."""

    mode: str
    beta: float = 1.0
    loser_source: str = "losers"
    history: list = field(default_factory=list)

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"preference loss mode {self.mode!r} is not one of {', '.join(MODES)}")
        if self.mode != "sft" and not self.beta > 0:
            raise ValueError(f"beta must be > 0, got {self.beta}")

    def __call__(self, ctx, batch, generator):
        import torch

        t, noise = draw_t_and_noise(replace(ctx, sampler=UniformTimesteps(ctx.num_train_timesteps)), batch, generator)
        if self.mode == "sft":
            model_w = _denoising_losses(ctx.forward, ctx, batch.x0, t, noise)
            loss = sft_loss(model_w)
            self._record(ctx.step, loss, None, model_w, None)
            return loss
        if ctx.reference is None:
            raise ValueError(f"the {self.mode} loss needs a frozen reference model (TrainRun.reference)")
        if self.mode == "npo":
            model_f = _denoising_losses(ctx.forward, ctx, batch.x0, t, noise)
            ref_f = _denoising_losses(ctx.reference, ctx, batch.x0, t, noise)
            loss = npo_loss(model_f, ref_f, self.beta)
            self._record(ctx.step, loss, None, model_f, ref_f)
            return loss
        x0 = torch.cat([batch.x0, batch.take(self.loser_source)])  # one forward for winners and losers
        t2, noise2 = torch.cat([t, t]), torch.cat([noise, noise])
        model_w, model_l = _denoising_losses(ctx.forward, ctx, x0, t2, noise2).chunk(2)
        ref_w, ref_l = _denoising_losses(ctx.reference, ctx, x0, t2, noise2).chunk(2)
        loss, accuracy = dpo_loss(model_w, model_l, ref_w, ref_l, self.beta)
        self._record(ctx.step, loss, accuracy, torch.cat([model_w, model_l]), torch.cat([ref_w, ref_l]))
        return loss

    def _record(self, step, loss, accuracy, model, ref) -> None:
        self.history.append((step, loss.detach(), accuracy, model.detach().mean(),
                             None if ref is None else ref.detach().mean()))

    def log_rows(self) -> list[dict]:
        """The history as JSON rows: step, loss, implicit_accuracy, model_loss, reference_loss (None where n/a)."""
        def f(x):
            return None if x is None else float(x)

        return [{"step": s, "loss": f(lo), "implicit_accuracy": f(a), "model_loss": f(m), "reference_loss": f(r)}
                for s, lo, a, m, r in self.history]
