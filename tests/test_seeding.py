import json

import pytest
import torch

from diffunlearn import naming
from diffunlearn.config import validate_config
from diffunlearn.models import build_unet
from diffunlearn.seeding import model_rng_seed, training_rng_seed
from diffunlearn.unlearn import objective, sources_of

from conftest import tiny_config


def test_originals_keep_their_seed_and_every_other_family_gets_its_own():
    assert [model_rng_seed("original", k) for k in range(5)] == list(range(5))
    assert training_rng_seed("original.s7") == 7
    seeds = {training_rng_seed(name) for name in
             [naming.oracle(f, k) for f in ("class3", "random50") for k in range(64)]
             + [naming.oracle2(f, k) for f in ("class3", "random50") for k in range(64)]}
    assert len(seeds) == 4 * 64  # no two oracle models share a seed
    assert min(seeds) >= 2**32 > 64  # none equals an original's seed index
    assert max(seeds) < 2**63
    assert training_rng_seed("oracle.class3.s0") == model_rng_seed("oracle.class3", 0)  # a pure function
    with pytest.raises(ValueError, match="non-negative"):
        model_rng_seed("oracle.f", -1)


def test_an_oracle_and_the_original_of_the_same_index_start_from_different_weights():
    cfg = validate_config(tiny_config("r"))["model"]

    def initial(name):
        return torch.cat([p.flatten() for p in build_unet(cfg, 8, 1, seed=training_rng_seed(name)).parameters()])

    original, oracle = initial("original.s0"), initial("oracle.f.s0")
    assert not torch.equal(original, oracle)
    assert torch.equal(oracle, initial("oracle.f.s0"))


def test_fine_tune_all_is_gd_on_all_the_training_data():
    assert sources_of("fine_tune_all") == ("train",)
    assert sources_of("gd") == ("retain",)
    for step in range(3):
        assert objective("fine_tune_all", {})(step) == [("train", 1.0)]
        assert objective("gd", {})(step) == [("retain", 1.0)]
    assert "fine_tune_all" in naming.FINE_TUNING_METHODS
    assert naming.unlearned("fine_tune_all", "class3", 2) == "unlearn.fine_tune_all.class3.s2"


def _train_named(tmp_path, name, captured):
    """Train ``name`` for 2 steps as train_original / train_oracle do (seed from the model name); its state."""
    from diffunlearn.checkpoint import load_ema_unet
    from diffunlearn.data import load_digits_source
    from diffunlearn.train import TrainRun, run_training

    cfg = validate_config(tiny_config("r"))
    cfg["train"].update(steps=2, checkpoint_every=2, log_every=1, batch_size=8, warmup_steps=0)
    images = load_digits_source()[0][:60]
    if naming.parse(name).kind == "oracle":
        images = images[10:]  # the oracle's retain set

    def build(seed):
        unet = build_unet(cfg["model"], images.shape[1], images.shape[3], seed=seed)
        captured.setdefault(name, torch.cat([p.detach().flatten().clone() for p in unet.parameters()]))
        return unet

    out = tmp_path / name
    run = TrainRun(out_dir=str(out), sources={"train": images}, train_cfg=cfg["train"], model_cfg=cfg["model"],
                   diffusion_cfg=cfg["diffusion"], seed=training_rng_seed(name), device="cpu", build_model=build)
    run_training(run, log=lambda message: None)
    state = json.loads((out / "checkpoint-2" / "training_state" / "state.json").read_text())
    final = torch.cat([p.detach().flatten() for p in load_ema_unet(out / "checkpoint-2").parameters()])
    return state, final


def test_oracle_and_original_start_apart_and_a_rerun_repeats_its_seed_and_weights(tmp_path):
    initial = {}
    original_state, _ = _train_named(tmp_path, "original.s0", initial)
    oracle_state, oracle_final = _train_named(tmp_path, "oracle.f.s0", initial)
    assert not torch.equal(initial["original.s0"], initial["oracle.f.s0"])
    assert original_state["rng_seed"] == 0
    assert oracle_state["rng_seed"] == model_rng_seed("oracle.f", 0) != original_state["rng_seed"]
    again = {}
    rerun_state, rerun_final = _train_named(tmp_path / "again", "oracle.f.s0", again)
    assert torch.equal(again["oracle.f.s0"], initial["oracle.f.s0"])
    assert rerun_state["rng_seed"] == oracle_state["rng_seed"]
    assert torch.equal(rerun_final, oracle_final)
