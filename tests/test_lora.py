"""LoRA unlearning through PEFT: only the adapter trains, and the merged model is the adapted model."""
import pytest
import torch
from safetensors.torch import load_file
from test_prune import DIFFUSION, MODEL, TRAIN, _outputs

from diffunlearn.checkpoint import load_ema_unet, load_training_state, write_initial_checkpoint
from diffunlearn.config import validate_config
from diffunlearn.data import load_digits_source
from diffunlearn.lora import attach_lora, lora_of, lora_prepare, lora_settings, merged_copy
from diffunlearn.models import build_scheduler, build_unet
from diffunlearn.train import TrainRun, descend_on, run_training

from conftest import tiny_config

HP = {"rank": 16, "alpha": 32, "dropout": 0.05, "target_modules": ["to_q", "to_k", "to_v"]}


def test_merged_model_gives_the_adapted_model_outputs():
    unet = attach_lora(build_unet(MODEL, 8, 1, seed=0), lora_settings(HP))
    with torch.no_grad():
        for name, p in unet.named_parameters():
            if "lora_B" in name:  # B starts at zero: give the adapter an effect
                p.normal_(0, 0.1)
    adapted = _outputs(unet)
    plain = merged_copy(unet)
    assert lora_of(plain) is None and not any("lora" in k for k in plain.state_dict())
    assert set(plain.state_dict()) == set(build_unet(MODEL, 8, 1).state_dict())
    torch.testing.assert_close(_outputs(plain), adapted, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(_outputs(build_unet(MODEL, 8, 1, seed=0)), adapted)


def test_lora_training_changes_only_the_adapter_and_saves_the_merged_model(tmp_path):
    source = write_initial_checkpoint(tmp_path / "original", build_unet(MODEL, 8, 1, seed=0),
                                      build_scheduler(DIFFUSION), seed=0)
    images = load_digits_source()[0][:32]
    run = TrainRun(out_dir=str(tmp_path / "lora"), sources={"retain": images}, train_cfg={**TRAIN, "ema_decay": 0.0},
                   model_cfg=MODEL, diffusion_cfg=DIFFUSION, seed=0, device="cpu", objective=descend_on("retain"),
                   init_from=str(source), init_weights="ema", prepare=lora_prepare(lora_settings(HP)))
    run_training(run, log=lambda m: None)
    ckpt = tmp_path / "lora" / "checkpoint-2"
    before = load_file(source / "training_state" / "raw.safetensors")
    after = load_file(ckpt / "training_state" / "raw.safetensors")
    changed = set()
    for key, value in after.items():
        base = key.replace(".base_layer.", ".")
        if "lora_" in key:
            changed.add(key)
            continue
        assert torch.equal(value, before[base]), key  # every non-adapter weight is where it started
    assert any("lora_B" in k and after[k].abs().sum() > 0 for k in changed)
    # unet/ holds the plain merged EMA model, equal to the adapted EMA model in training_state/
    plain = load_ema_unet(ckpt)
    assert lora_of(plain) is None and type(plain).__name__ == "UNet2DModel"
    raw, ema = build_unet(MODEL, 8, 1), build_unet(MODEL, 8, 1)
    load_training_state(ckpt, raw, ema)
    assert lora_of(ema) is not None
    torch.testing.assert_close(_outputs(plain), _outputs(ema), rtol=1e-5, atol=1e-6)
    assert not torch.allclose(_outputs(plain), _outputs(load_ema_unet(source)))


def test_default_model_has_the_targets_and_unknown_targets_are_refused():
    cfg = validate_config(tiny_config("/tmp/unused", **{"unlearning.methods": ["lora"]}))
    plain = build_unet(cfg["model"], 8, 1)  # no attention_resolutions: the mid block's attention is adapted
    assert lora_of(attach_lora(plain, lora_settings(cfg["unlearning"]["lora"]))) is not None
    with pytest.raises(ValueError, match="unlearning.lora.target_modules: the model has no to_x layers"):
        attach_lora(build_unet(MODEL, 8, 1), lora_settings({**HP, "target_modules": ["to_q", "to_x"]}))
