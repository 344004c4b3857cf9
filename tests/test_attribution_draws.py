"""Each estimator on the draws it is sound on; LDS beside its permutation null and the seed-to-seed ceiling."""
import numpy as np
import pytest

from diffunlearn.attribution.experiment import lds_rows
from diffunlearn.attribution.lds import lds, lds_null_and_bootstrap, seed_ceiling
from diffunlearn.attribution.removal import (
    datashapley_size_probabilities,
    draw_for_estimators,
    estimator_rows,
    num_subset_models,
)
from diffunlearn.config import ConfigError, validate_config

from conftest import tiny_config


@pytest.mark.parametrize("removal,estimators", [("datashapley", ["shapley", "banzhaf"]),
                                                ("uniform", ["datamodel"]), ("datamodel", ["shapley"])])
def test_a_shared_distribution_an_estimator_is_unsound_on_is_a_config_error(tmp_path, removal, estimators):
    cfg = tiny_config(tmp_path, **{"attribution.removal": removal, "attribution.estimators": estimators})
    with pytest.raises(ConfigError, match=f"attribution.removal: {removal} draws are unsound for the"):
        validate_config(cfg)


def test_sound_shared_draws_are_accepted(tmp_path):
    cfg = validate_config(tiny_config(tmp_path, **{"attribution.removal": "uniform", "attribution.estimators": ["banzhaf"]}))
    assert estimator_rows(["banzhaf"], "uniform", 5) == {"banzhaf": range(5)}
    assert cfg["attribution"]["removal"] == "uniform"


def test_per_estimator_draws_come_from_each_estimators_distribution():
    n, m = 10, 4000
    estimators = ["shapley", "banzhaf", "datamodel"]
    masks = draw_for_estimators(estimators, None, n, m, seed=0, alpha=0.3)
    rows = estimator_rows(estimators, None, m)
    assert masks.shape == (3 * m, n) and num_subset_models(estimators, None, m) == 3 * m
    sizes = {est: masks[list(r)].sum(axis=1) for est, r in rows.items()}
    assert (sizes["datamodel"] == 3).all()  # alpha-subsets: floor(0.3 * 10) units kept
    # Banzhaf: every unit kept independently with probability 1/2, so sizes are Binomial(10, 1/2)
    assert abs(sizes["banzhaf"].mean() - 5) < 0.15 and abs(sizes["banzhaf"].var() - 2.5) < 0.3
    # Shapley kernel: the size distribution follows (n-1) / (s (n-s)) over 1..n-1
    freq = np.bincount(sizes["shapley"], minlength=n + 1)[1:n] / m
    np.testing.assert_allclose(freq, datashapley_size_probabilities(n), atol=0.03)
    # an estimator's draws do not depend on which others are listed
    alone = draw_for_estimators(["banzhaf"], None, n, m, seed=0)
    np.testing.assert_array_equal(alone, masks[list(rows["banzhaf"])])


def test_permutation_null_and_seed_ceiling():
    rng = np.random.default_rng(1)
    truth = rng.normal(size=30)
    by_seed = truth + 0.3 * rng.normal(size=(3, 30))
    # the ceiling is the mean Spearman correlation between the seeds' behaviours
    pairs = [lds(by_seed[i], by_seed[j]) for i, j in ((0, 1), (0, 2), (1, 2))]
    assert seed_ceiling(by_seed) == pytest.approx(np.mean(pairs))
    assert np.isnan(seed_ceiling(by_seed[:1]))
    informative = lds_null_and_bootstrap(truth, by_seed, num_draws=2000, seed=0)
    noise = lds_null_and_bootstrap(rng.normal(size=30), by_seed, num_draws=2000, seed=0)
    # the null's 95th percentile of a Spearman correlation on 30 pairs is about 1.645 / sqrt(29) (averaging three
    # highly correlated seeds barely narrows it)
    assert informative["null_p95"] == pytest.approx(1.645 / np.sqrt(29), abs=0.06)
    assert informative["boot_low"] > informative["null_p95"]
    mean_lds = np.mean([lds(truth, v) for v in by_seed])
    assert informative["boot_low"] < mean_lds < informative["boot_high"]
    assert noise["boot_low"] < noise["null_p95"]


def test_lds_rows_report_null_and_ceiling_at_each_size():
    rng = np.random.default_rng(2)
    n = 8
    w = rng.normal(size=n)
    masks = rng.random((60, n)) < 0.5
    values = masks @ w + 0.05 * rng.normal(size=60)
    heldout = rng.random((20, n)) < 0.5
    by_seed = heldout @ w + 0.05 * rng.normal(size=(3, 20))
    rows = lds_rows("banzhaf", masks, values, 0.0, 0.0, heldout, by_seed, [20, 60], seed=0, num_draws=500)
    assert [r["num_subsets"] for r in rows] == [20, 60]
    for r in rows:
        assert r["ceiling"] == pytest.approx(seed_ceiling(by_seed)) and r["num_heldout"] == 20
        assert r["mean"] > r["null_p95"] and r["boot_low"] <= r["mean"] <= r["boot_high"]
    with pytest.raises(ValueError, match="size 61 is outside"):
        lds_rows("banzhaf", masks, values, 0.0, 0.0, heldout, by_seed, [61])
