"""train.timesteps / train.loss_weighting inside the training engine: exact resumption of adaptive samplers, and
uniform written out equals the default."""
import json
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file
from test_train import SCRIPT  # the SIGKILL-between-checkpoints training script (train_cfg, model, diffusion from cfg)

from diffunlearn.config import validate_config

from conftest import ROOT, tiny_config

SCHEMES = {
    # few timesteps so that the importance sampler warms up (every t seen twice) within the run
    "importance": ({"scheme": "importance", "history": 2}, {"scheme": "min_snr"}, 10),
    "loss_decrease": ({"scheme": "loss_decrease", "bins": 4, "warmup_visits": 1}, {"scheme": "p2"}, 1000),
    "fast_importance": ({"scheme": "fast_importance", "bins": 4, "warmup_visits": 1}, {"scheme": "uniform"}, 1000),
}


def _cfg(scheme):
    timesteps, weighting, T = SCHEMES[scheme]
    cfg = validate_config(tiny_config("r"))
    cfg["train"].update(steps=8, checkpoint_every=2, log_every=1, batch_size=16, timesteps=timesteps,
                        loss_weighting=weighting)
    cfg["diffusion"]["num_train_timesteps"] = T
    return cfg


def _train(out, cfg, kill_at=None):
    code = SCRIPT.format(src=str(ROOT / "src"), cfg=json.dumps(cfg), kill_at=kill_at, out=str(out))
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)


def _state(folder):
    return json.loads((folder / "checkpoint-8" / "training_state" / "state.json").read_text())


@pytest.mark.parametrize("scheme", sorted(SCHEMES))
def test_adaptive_run_killed_and_resumed_equals_an_uninterrupted_one(tmp_path, scheme):
    cfg = _cfg(scheme)
    killed = _train(tmp_path / "killed", cfg, kill_at=5)
    assert killed.returncode == -9, killed.stderr
    again = _train(tmp_path / "killed", cfg)
    assert again.returncode == 0, again.stderr
    straight = _train(tmp_path / "straight", cfg)
    assert straight.returncode == 0, straight.stderr
    for name in ("unet/diffusion_pytorch_model.safetensors", "training_state/raw.safetensors"):
        a = load_file(tmp_path / "killed" / "checkpoint-8" / name)
        b = load_file(tmp_path / "straight" / "checkpoint-8" / name)
        for k in a:
            assert torch.equal(a[k], b[k]), f"{name}:{k} differs after resume"
    resumed, uninterrupted = _state(tmp_path / "killed"), _state(tmp_path / "straight")
    assert resumed["loss_log"] == uninterrupted["loss_log"]
    assert resumed["timestep_sampler"] == uninterrupted["timestep_sampler"]
    sampler_state = uninterrupted["timestep_sampler"]
    if scheme == "importance":
        assert min(sampler_state["counts"]) == 2  # warmed up: the draws were no longer uniform at the kill
    elif scheme == "fast_importance":
        assert min(sampler_state["visits"]) >= 1 and min(sampler_state["second_moment"]) > 0
    else:
        assert min(sampler_state["visits"]) >= 1 and max(sampler_state["fast"]) > 0


def test_uniform_written_out_trains_as_the_default(tmp_path):
    from diffunlearn.data import load_digits_source
    from diffunlearn.train import TrainRun, run_training

    outs = {}
    for name, extra in (("default", {}), ("uniform", {"timesteps": {"scheme": "uniform"},
                                                      "loss_weighting": {"scheme": "uniform"}})):
        cfg = validate_config(tiny_config("r"))
        cfg["train"].update(steps=3, checkpoint_every=3, log_every=1, batch_size=8)
        cfg["train"].pop("timesteps", None)
        cfg["train"].pop("loss_weighting", None)
        cfg["train"].update(extra)
        run = TrainRun(out_dir=str(tmp_path / name), sources={"train": load_digits_source()[0][:64]},
                       train_cfg=cfg["train"], model_cfg=cfg["model"], diffusion_cfg=cfg["diffusion"], seed=1)
        run_training(run, log=lambda m: None)
        outs[name] = tmp_path / name / "checkpoint-3"
    a = load_file(outs["default"] / "training_state" / "raw.safetensors")
    b = load_file(outs["uniform"] / "training_state" / "raw.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    la = json.loads((outs["default"] / "training_state" / "state.json").read_text())
    lb = json.loads((outs["uniform"] / "training_state" / "state.json").read_text())
    assert la["loss_log"] == lb["loss_log"] and "timestep_sampler" not in lb
