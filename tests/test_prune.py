"""Structured pruning with torch-pruning: a smaller, cheaper model that saves and reloads without pickle."""
import json
import pickle

import numpy as np
import pytest
import torch

from diffunlearn.checkpoint import load_ema_unet, load_training_state, write_initial_checkpoint
from diffunlearn.data import load_digits_source
from diffunlearn.flops import train_step_flops
from diffunlearn.models import build_scheduler, build_unet, count_parameters
from diffunlearn.prune import PRUNED_JSON, is_pruned, layer_shapes, prune_unet, pruning_prepare
from diffunlearn.train import TrainRun, descend_on, run_training

MODEL = {"block_out_channels": [8, 16], "layers_per_block": 1, "attention_resolutions": [4], "dropout": 0.0,
         "norm_num_groups": 4, "attention_head_dim": 4}
DIFFUSION = {"num_train_timesteps": 100, "beta_schedule": "linear", "beta_start": 1e-4, "beta_end": 0.02}
TRAIN = {"steps": 2, "batch_size": 8, "lr": 1e-3, "warmup_steps": 0, "ema_decay": 0.9, "checkpoint_every": 2,
         "log_every": 1, "mixed_precision": "no", "use_8bit_adam": False, "adam_betas": [0.9, 0.999],
         "weight_decay": 0.0, "grad_clip": 1.0, "gradient_accumulation_steps": 1, "random_flip": False}


def _outputs(unet, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(3, 1, 8, 8, generator=g)
    with torch.no_grad():
        return unet.eval()(x, torch.tensor([1, 50, 99])).sample


def test_pruned_model_is_smaller_and_cheaper_and_keeps_group_and_head_divisibility():
    unet = build_unet(MODEL, 8, 1, seed=0)
    params, flops = count_parameters(unet), train_step_flops(unet, (8, 1, 8, 8))
    record = prune_unet(unet, 0.3, (1, 1, 8, 8))
    assert is_pruned(unet)
    assert count_parameters(unet) == record["parameters_after"] < params == record["parameters_before"]
    assert train_step_flops(unet, (8, 1, 8, 8)) < flops
    assert unet.conv_out.in_channels == unet.conv_norm_out.num_channels and unet.conv_out.out_channels == 1
    for m in unet.modules():
        if isinstance(m, torch.nn.GroupNorm):
            assert m.num_channels % m.num_groups == 0 and m.num_channels < 16 * 3
        if hasattr(m, "to_q"):
            assert m.to_q.out_features % m.heads == 0 and m.to_q.out_features < 16
    assert _outputs(unet).shape == (3, 1, 8, 8)


def test_zero_ratio_changes_nothing_and_bad_ratio_is_refused():
    unet = build_unet(MODEL, 8, 1, seed=0)
    before = _outputs(unet)
    assert prune_unet(unet, 0.0, (1, 1, 8, 8))["removed_channel_fraction"] == 0
    assert not is_pruned(unet) and torch.equal(_outputs(unet), before)
    with pytest.raises(ValueError, match="pruning_ratio"):
        prune_unet(unet, 1.0, (1, 1, 8, 8))


def test_saved_pruned_model_reloads_without_unpickling_and_gives_the_same_outputs(tmp_path, monkeypatch):
    unet = build_unet(MODEL, 8, 1, seed=0)
    prune_unet(unet, 0.3, (1, 1, 8, 8))
    with torch.no_grad():  # weights that differ from any initialisation
        for p in unet.parameters():
            p.add_(0.01 * torch.randn_like(p))
    before = _outputs(unet)
    folder = write_initial_checkpoint(tmp_path / "ckpt", unet, build_scheduler(DIFFUSION), seed=0)
    spec = json.loads((folder / "unet" / PRUNED_JSON).read_text())
    assert spec["layers"] == {k: list(v) for k, v in layer_shapes(unet).items()}

    def no_unpickling(*args, **kwargs):
        raise AssertionError("a checkpoint was unpickled")

    monkeypatch.setattr(pickle, "loads", no_unpickling)
    monkeypatch.setattr(pickle, "load", no_unpickling)
    monkeypatch.setattr(torch, "load", no_unpickling)
    reloaded = load_ema_unet(folder)
    assert layer_shapes(reloaded) == layer_shapes(unet)
    assert torch.equal(_outputs(reloaded), before)
    raw, ema = build_unet(MODEL, 8, 1), build_unet(MODEL, 8, 1)  # unpruned shapes: resized on loading
    load_training_state(folder, raw, ema)
    assert torch.equal(_outputs(raw), before) and torch.equal(_outputs(ema), before)


@pytest.fixture(scope="module")
def pruned_run(tmp_path_factory):
    """An original (2 steps), prune_fine_tune from it (2 steps) and sparsified fine-tuning of the pruned model."""
    tmp = tmp_path_factory.mktemp("prune")
    images = load_digits_source()[0][:64]
    common = dict(model_cfg=MODEL, diffusion_cfg=DIFFUSION, seed=0, device="cpu", objective=descend_on("train"))
    original = run_training(TrainRun(out_dir=str(tmp / "original"), sources={"train": images}, train_cfg=TRAIN,
                                     **common), log=lambda m: None)
    record = {}
    pruned = run_training(TrainRun(out_dir=str(tmp / "pruned"), sources={"train": images}, train_cfg=TRAIN,
                                   init_from=str(tmp / "original" / "checkpoint-2"), init_weights="ema",
                                   prepare=pruning_prepare(0.3, (8, 1, 8, 8), record), **common), log=lambda m: None)
    sparsified = run_training(TrainRun(out_dir=str(tmp / "sparsified"), sources={"train": images[:32]},
                                       train_cfg=TRAIN, init_from=str(tmp / "pruned" / "checkpoint-2"),
                                       init_weights="ema", **common), log=lambda m: None)
    return tmp, original, pruned, sparsified, record


def test_prune_fine_tune_trains_the_smaller_model_at_fewer_flops(pruned_run):
    tmp, original, pruned, sparsified, record = pruned_run
    assert record["train_step_flops_after"] < record["train_step_flops_before"] == original["flops_per_micro_batch"]
    assert pruned["flops_per_step"] == record["train_step_flops_after"] < original["flops_per_step"]
    assert sparsified["flops_per_step"] == pruned["flops_per_step"]
    for name in ("pruned", "sparsified"):
        unet = load_ema_unet(tmp / name / "checkpoint-2")
        assert is_pruned(unet) and count_parameters(unet) == record["parameters_after"]
        assert np.isfinite(_outputs(unet).numpy()).all()
    assert not (tmp / "original" / "checkpoint-2" / "unet" / PRUNED_JSON).exists()
