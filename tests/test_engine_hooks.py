"""The training engine's pluggable pieces: weighting, a stateful timestep sampler (saved and restored), a loss
with a frozen reference model reading paired sources."""
import json

import torch

from diffunlearn.config import validate_config
from diffunlearn.data import load_digits_source
from diffunlearn.objectives import draw_t_and_noise, noisy, per_example_mse
from diffunlearn.train import Trainer, TrainRun, run_training

from conftest import tiny_config

IMAGES = load_digits_source()[0][:64]


def _run(out, steps=2, **kw):
    cfg = validate_config(tiny_config("r"))
    cfg["train"].update(steps=steps, checkpoint_every=steps, log_every=1, batch_size=8, warmup_steps=0)
    return TrainRun(out_dir=str(out), sources=kw.pop("sources", {"train": IMAGES}), train_cfg=cfg["train"],
                    model_cfg=cfg["model"], diffusion_cfg=cfg["diffusion"], seed=0, **kw)


def _losses(out):
    state = json.loads((out / "checkpoint-2" / "training_state" / "state.json").read_text())
    return [loss for _, loss in state["loss_log"]], state


class CountingSampler:
    """Uniform draws; counts the losses it observed (state saved in checkpoints)."""

    needs_losses = True

    def __init__(self, T):
        self.T, self.seen = T, 0

    def sample(self, n, generator):
        return torch.randint(0, self.T, (n,), device=generator.device, generator=generator)

    def observe(self, t, losses):
        assert t.shape == losses.shape
        self.seen += len(t)

    def state_dict(self):
        return {"seen": self.seen}

    def load_state_dict(self, state):
        self.seen = state["seen"]


def test_unit_weights_and_an_observing_sampler_give_the_default_losses(tmp_path):
    run_training(_run(tmp_path / "plain"), log=lambda m: None)
    run_training(_run(tmp_path / "weighted", weighting=lambda s: torch.ones(s.config.num_train_timesteps),
                      timesteps=lambda s: CountingSampler(s.config.num_train_timesteps)), log=lambda m: None)
    plain, _ = _losses(tmp_path / "plain")
    weighted, state = _losses(tmp_path / "weighted")
    assert len(weighted) == len(plain) == 2
    assert all(abs(a - b) < 1e-5 * abs(b) for a, b in zip(weighted, plain))  # the same mean, summed in another order
    assert state["timestep_sampler"] == {"seen": 2 * 8}


def test_sampler_state_is_restored_from_the_checkpoint_it_resumes_from(tmp_path):
    run = _run(tmp_path, timesteps=lambda s: CountingSampler(s.config.num_train_timesteps))
    run.checkpoint_steps = [2]
    Trainer(run, log=lambda m: None).train()
    # an interrupted run leaves its checkpoints in resume/; a new Trainer of the same run resumes from there
    (tmp_path / "resume").mkdir()
    (tmp_path / "checkpoint-2").rename(tmp_path / "resume" / "checkpoint-2")
    again = Trainer(run, log=lambda m: None)
    assert again.start_step == 2 and again.ctx.sampler.seen == 16


class ReferenceGapLoss:
    """Paired sources sharing t and noise; the loss is the model's minus the frozen reference's error."""

    def __call__(self, ctx, batch, generator):
        t, noise = draw_t_and_noise(ctx, batch, generator)
        loss = 0.0
        for x0 in (batch.x0, batch.take("losers")):
            x_t = noisy(ctx, x0, t, noise)
            ref = ctx.reference(x_t, t)
            assert not ref.requires_grad
            loss = loss + (per_example_mse(ctx.forward(x_t, t), noise) - per_example_mse(ref, noise)).mean()
        return loss


def test_reference_model_stays_frozen_and_paired_sources_share_rows(tmp_path):
    run_training(_run(tmp_path / "base"), log=lambda m: None)
    base = tmp_path / "base" / "checkpoint-2"
    run = _run(tmp_path / "pairs", sources={"winners": IMAGES[:32], "losers": IMAGES[32:]}, init_from=str(base),
               init_weights="ema", reference="init", loss=ReferenceGapLoss())
    run.objective = lambda step: [("winners", 1.0)]
    trainer = Trainer(run, log=lambda m: None)
    assert trainer.samplers["winners"].indices(0).tolist() == trainer.samplers["losers"].indices(0).tolist()
    trainer.train()
    from diffunlearn.checkpoint import load_ema_unet

    ref = load_ema_unet(base)
    after = load_ema_unet(tmp_path / "pairs" / "checkpoint-2")
    assert any(not torch.equal(a, b) for a, b in zip(ref.state_dict().values(), after.state_dict().values()))
