import pytest
import torch

from conftest import tiny_config
from diffunlearn import naming
from diffunlearn.config import validate_config
from diffunlearn.models import build_unet
from diffunlearn.seeding import model_rng_seed, training_rng_seed
from diffunlearn.unlearn import objective, sources_of


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
