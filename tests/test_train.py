import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from diffunlearn.checkpoint import CorruptCheckpointError, latest_valid_checkpoint, load_ema_unet, verify_checkpoint
from diffunlearn.config import validate_config
from diffunlearn.data import load_digits_source
from diffunlearn.train import TrainRun, run_training

from conftest import ROOT, tiny_config

SCRIPT = textwrap.dedent("""
    import os, sys, json, torch
    torch.set_num_threads(1)
    sys.path.insert(0, {src!r})
    from diffunlearn.config import validate_config
    from diffunlearn.data import load_digits_source
    from diffunlearn.train import TrainRun, run_training
    cfg = json.loads({cfg!r})
    kill_at = {kill_at!r}
    images = load_digits_source()[0][:200]
    def log(msg):
        if kill_at and msg.startswith(f"step {{kill_at}}/"):
            os.kill(os.getpid(), 9)  # SIGKILL between checkpoints
    run = TrainRun(out_dir={out!r}, sources={{"train": images}}, train_cfg=cfg["train"], model_cfg=cfg["model"],
                   diffusion_cfg=cfg["diffusion"], seed=3, device="cpu")
    run_training(run, log=log)
""")


def _cfg():
    cfg = validate_config(tiny_config("r"))
    cfg["train"].update(steps=6, checkpoint_every=2, log_every=1, batch_size=8)
    cfg["model"]["dropout"] = 0.1  # dropout randomness must also resume exactly
    return cfg


def _train_in_subprocess(out, kill_at=None):
    code = SCRIPT.format(src=str(ROOT / "src"), cfg=json.dumps(_cfg()), kill_at=kill_at, out=str(out))
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)


def test_sigkill_between_checkpoints_then_rerun_gives_identical_weights(tmp_path):
    killed = _train_in_subprocess(tmp_path / "killed", kill_at=5)
    assert killed.returncode == -9, killed.stderr
    resume = tmp_path / "killed" / "resume"
    assert sorted(p.name for p in resume.iterdir() if p.name.startswith("checkpoint")) == ["checkpoint-2", "checkpoint-4"]
    assert not (tmp_path / "killed" / "checkpoint-6").exists()

    again = _train_in_subprocess(tmp_path / "killed")
    assert again.returncode == 0, again.stderr
    straight = _train_in_subprocess(tmp_path / "straight")
    assert straight.returncode == 0, straight.stderr

    for name in ("unet/diffusion_pytorch_model.safetensors", "training_state/raw.safetensors", "training_state/optimizer.safetensors"):
        a = load_file(tmp_path / "killed" / "checkpoint-6" / name)
        b = load_file(tmp_path / "straight" / "checkpoint-6" / name)
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), f"{name}:{k} differs after resume"
    state = json.loads((tmp_path / "killed" / "checkpoint-6" / "training_state" / "state.json").read_text())
    assert state["step"] == 6 and state["examples_seen"] == 6 * 8
    assert not (tmp_path / "killed" / "resume").exists()
    # The resumed run really resumed: it logged so, and it did not start from scratch.
    assert (tmp_path / "killed" / "checkpoint-2").exists()


def _train_small(tmp_path, steps=4):
    cfg = _cfg()
    cfg["train"].update(steps=steps)
    run = TrainRun(out_dir=str(tmp_path), sources={"train": load_digits_source()[0][:100]}, train_cfg=cfg["train"],
                   model_cfg=cfg["model"], diffusion_cfg=cfg["diffusion"], seed=0)
    run_training(run, log=lambda m: None)
    return tmp_path


def test_truncated_checkpoint_is_reported_as_corrupt_not_loaded(tmp_path):
    out = _train_small(tmp_path)
    ckpt = out / "checkpoint-4"
    verify_checkpoint(ckpt)
    weights = ckpt / "unet" / "diffusion_pytorch_model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptCheckpointError, match=r"corrupt checkpoint .*checkpoint-4: unet/diffusion_pytorch_model.safetensors .*truncated"):
        load_ema_unet(ckpt)
    messages = []
    assert latest_valid_checkpoint(out, log=messages.append) == out / "checkpoint-2"
    assert any("corrupt checkpoint" in m for m in messages)


def test_checkpoint_loads_with_diffusers_and_samples_with_ddpm_pipeline(tmp_path):
    from diffusers import DDPMPipeline, UNet2DModel

    out = _train_small(tmp_path)
    unet = UNet2DModel.from_pretrained(out / "checkpoint-4", subfolder="unet")
    ours = load_ema_unet(out / "checkpoint-4")
    for (k, a), (_, b) in zip(unet.state_dict().items(), ours.state_dict().items()):
        assert torch.equal(a, b), k
    pipe = DDPMPipeline.from_pretrained(out / "checkpoint-4")
    assert pipe.unet.config.sample_size == 8
    images = pipe(batch_size=2, num_inference_steps=5, generator=torch.Generator().manual_seed(0), output_type="np").images
    assert images.shape == (2, 8, 8, 1)
    assert np.isfinite(images).all() and images.min() >= 0 and images.max() <= 1
    # the same EMA weights also sample through our own sampler
    from diffunlearn.models import build_scheduler
    from diffunlearn.sample import sample_images

    ours_samples = sample_images(ours, build_scheduler(_cfg()["diffusion"]), 3, num_inference_steps=5, batch_size=2)
    assert ours_samples.shape == (3, 8, 8, 1) and ours_samples.dtype == np.uint8


def test_training_reduces_the_loss(tmp_path):
    cfg = _cfg()
    cfg["model"]["dropout"] = 0.0
    cfg["train"].update(steps=60, checkpoint_every=60, log_every=10, batch_size=32, lr=2e-3)
    logs = []
    run = TrainRun(out_dir=str(tmp_path), sources={"train": load_digits_source()[0][:300]}, train_cfg=cfg["train"],
                   model_cfg=cfg["model"], diffusion_cfg=cfg["diffusion"], seed=0)
    run_training(run, log=logs.append)
    losses = [float(m.split("loss ")[1].split()[0]) for m in logs if m.startswith("step ")]
    assert len(losses) == 6
    assert losses[-1] < 0.6 * losses[0]
