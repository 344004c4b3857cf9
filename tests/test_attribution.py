"""Tests for diffunlearn.attribution: removal distributions, estimators and LDS."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import stats

from diffunlearn.attribution.estimators import (
    banzhaf,
    datamodel_ridge,
    leave_one_out,
    predict_behaviour,
    shapley_regression,
)
from diffunlearn.attribution.lds import lds, lds_curve, lds_with_ci
from diffunlearn.attribution.removal import (
    datashapley_size_probabilities,
    draw_subsets,
    units_to_examples,
)

# ---------------------------------------------------------------- removal distributions

def kernel_shap_size_weights(n):
    sizes = np.arange(1, n)
    weights = (n - 1) / (sizes * (n - sizes))
    return weights / weights.sum()


def size_counts(sizes, n):
    return np.bincount(sizes, minlength=n + 1)[1:n]


def test_datashapley_size_probabilities_are_kernel_shap_weights():
    # written out for n = 4: weights 3/3, 3/4, 3/3 -> 4/11, 3/11, 4/11
    np.testing.assert_allclose(datashapley_size_probabilities(4), [4 / 11, 3 / 11, 4 / 11])
    np.testing.assert_allclose(datashapley_size_probabilities(10), kernel_shap_size_weights(10))


def test_datashapley_sizes_follow_kernel_shap_weights():
    n, draws = 10, 20_000
    masks = draw_subsets("datashapley", n, draws, seed=0)
    observed = size_counts(masks.sum(axis=1), n)
    assert observed.sum() == draws  # no empty or full subsets
    expected = kernel_shap_size_weights(n) * draws
    assert stats.chisquare(observed, expected).pvalue > 0.001


def test_size_chi_square_rejects_wrong_size_distributions():
    # the same statistic has power: sizes from other distributions fail it decisively
    n, draws = 10, 20_000
    expected = kernel_shap_size_weights(n) * draws
    rng = np.random.default_rng(1)
    uniform_sizes = rng.integers(1, n, size=draws)
    assert stats.chisquare(size_counts(uniform_sizes, n), expected).pvalue < 1e-6
    binomial = draw_subsets("uniform", n, draws, seed=1)
    binomial = binomial[(binomial.sum(axis=1) > 0) & (binomial.sum(axis=1) < n)]
    binomial_counts = size_counts(binomial.sum(axis=1), n)
    assert stats.chisquare(binomial_counts, kernel_shap_size_weights(n) * binomial_counts.sum()).pvalue < 1e-6


def test_datashapley_subsets_of_a_given_size_are_uniform():
    n, draws = 10, 20_000
    masks = draw_subsets("datashapley", n, draws, seed=2)
    singletons = masks[masks.sum(axis=1) == 1]
    which_unit = np.bincount(np.argmax(singletons, axis=1), minlength=n)
    assert stats.chisquare(which_unit).pvalue > 0.001
    # by symmetry every unit is kept half the time overall
    np.testing.assert_allclose(masks.mean(axis=0), 0.5, atol=0.02)


def test_uniform_keeps_each_unit_with_probability_one_half():
    masks = draw_subsets("uniform", 50, 4000, seed=3)
    assert masks.shape == (4000, 50) and masks.dtype == bool
    assert abs(masks.mean() - 0.5) < 0.005
    np.testing.assert_allclose(masks.mean(axis=0), 0.5, atol=0.04)
    # independence across units: the pairwise keep rate is 1/4
    assert abs((masks[:, 0] & masks[:, 1]).mean() - 0.25) < 0.03


@pytest.mark.parametrize("n, alpha", [(10, 0.5), (11, 0.5), (7, 0.3), (100, 0.25)])
def test_datamodel_rows_keep_floor_alpha_n_units(n, alpha):
    masks = draw_subsets("datamodel", n, 500, seed=4, alpha=alpha)
    assert (masks.sum(axis=1) == math.floor(alpha * n)).all()
    expected_rate = math.floor(alpha * n) / n
    np.testing.assert_allclose(masks.mean(axis=0), expected_rate, atol=0.1)


def test_loo_row_i_removes_exactly_unit_i_mod_n():
    n = 5
    masks = draw_subsets("loo", n, 12, seed=5)
    assert (masks.sum(axis=1) == n - 1).all()
    np.testing.assert_array_equal(np.argmin(masks, axis=1), np.arange(12) % n)


@pytest.mark.parametrize("kind", ["datashapley", "datamodel", "uniform", "loo"])
def test_draws_are_deterministic_from_the_seed(kind):
    first = draw_subsets(kind, 20, 100, seed=123)
    np.testing.assert_array_equal(first, draw_subsets(kind, 20, 100, seed=123))
    if kind != "loo":
        assert not np.array_equal(first, draw_subsets(kind, 20, 100, seed=124))


def test_zero_subsets_gives_an_empty_array():
    assert draw_subsets("datashapley", 8, 0, seed=0).shape == (0, 8)


@pytest.mark.parametrize(
    "kwargs, named",
    [
        (dict(kind="shapley", n_units=10), "'shapley'"),
        (dict(kind="datamodel", n_units=10, alpha=1.5), "1.5"),
        (dict(kind="datamodel", n_units=10, alpha=0.0), "0.0"),
        (dict(kind="datashapley", n_units=1), "1"),
        (dict(kind="uniform", n_units=0), "0"),
        (dict(kind="uniform", n_units=2.5), "2.5"),
    ],
)
def test_bad_arguments_raise_value_error_naming_the_value(kwargs, named):
    with pytest.raises(ValueError, match=named):
        draw_subsets(num_subsets=5, seed=0, **kwargs)


def test_units_to_examples_maps_class_masks_to_example_masks():
    labels = np.array([0, 2, 1, 2, 0, 1])
    kept_classes = np.array([True, False, True])
    np.testing.assert_array_equal(
        units_to_examples(kept_classes, labels), [True, True, False, True, True, False]
    )
    # a batch of unit masks maps row by row
    batch = np.array([[True, False, True], [False, True, False]])
    np.testing.assert_array_equal(units_to_examples(batch, labels)[1], [False, False, True, False, False, True])
    # examples as their own units is the identity
    masks = draw_subsets("uniform", 6, 3, seed=0)
    np.testing.assert_array_equal(units_to_examples(masks, np.arange(6)), masks)


def test_units_to_examples_rejects_out_of_range_units():
    with pytest.raises(ValueError, match="outside"):
        units_to_examples(np.array([True, False]), np.array([0, 1, -1]))
    with pytest.raises(ValueError, match="outside"):
        units_to_examples(np.array([True, False]), np.array([0, 2]))


# ---------------------------------------------------------------- Shapley

N_GAME = 6
GAME_WEIGHTS = np.array([3.0, -1.0, 2.0, 0.5, -2.0, 1.0])
QUOTA_WEIGHTS = np.array([4, 3, 2, 2, 1, 1])


def nonadditive_game(masks):
    """Additive part, a pairwise synergy of units 0 and 1, and a weighted-majority bonus."""
    # a large v(empty) so that an estimator which forgets to subtract it is visibly wrong
    masks = np.asarray(masks, dtype=bool)
    synergy = masks[..., 0] & masks[..., 1]
    majority = (masks @ QUOTA_WEIGHTS) >= 7
    return 50.0 + masks @ GAME_WEIGHTS + 2.5 * synergy + 4.0 * majority


def exact_shapley_values(game, n):
    """phi_i = sum_{S not containing i} |S|! (n-|S|-1)! / n! (v(S + i) - v(S)), by enumeration."""
    phi = np.zeros(n)
    for i in range(n):
        others = [j for j in range(n) if j != i]
        for size in range(n):
            weight = math.factorial(size) * math.factorial(n - size - 1) / math.factorial(n)
            for coalition in itertools.combinations(others, size):
                without = np.zeros(n, dtype=bool)
                without[list(coalition)] = True
                with_i = without.copy()
                with_i[i] = True
                phi[i] += weight * (game(with_i) - game(without))
    return phi


def game_endpoints(game, n):
    return float(game(np.zeros(n, dtype=bool))), float(game(np.ones(n, dtype=bool)))


def test_exact_shapley_values_of_the_test_game_are_known():
    phi = exact_shapley_values(nonadditive_game, N_GAME)
    v_empty, v_full = game_endpoints(nonadditive_game, N_GAME)
    assert phi.sum() == pytest.approx(v_full - v_empty)
    # additive weight + half the synergy for units 0 and 1, plus a share of the majority bonus
    assert phi[0] > GAME_WEIGHTS[0] + 1.25 and phi[4] > GAME_WEIGHTS[4]


def test_shapley_regression_is_exact_with_kernel_weighted_enumeration():
    # n = 4: kernel-SHAP P(S) is 2:1:2 for sizes 1:2:3, so listing every size-1 and size-3
    # coalition twice and every size-2 coalition once is the exact kernel; the regression
    # then returns the exact Shapley values.
    n = 4
    rows = []
    for size, copies in [(1, 2), (2, 1), (3, 2)]:
        for coalition in itertools.combinations(range(n), size):
            mask = np.zeros(n, dtype=bool)
            mask[list(coalition)] = True
            rows.extend([mask] * copies)
    masks = np.array(rows)

    def game(m):
        m = np.asarray(m, dtype=bool)
        return 0.5 + m @ np.array([1.0, -2.0, 0.5, 3.0]) + 3.0 * (m[..., 1] & m[..., 2] & m[..., 3]) + 1.0 * (m.sum(-1) >= 2)

    v_empty, v_full = game_endpoints(game, n)
    phi = shapley_regression(masks, game(masks), v_empty, v_full)
    np.testing.assert_allclose(phi, exact_shapley_values(game, n), atol=1e-10)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_shapley_regression_recovers_exact_values_from_datashapley_draws(seed):
    phi_exact = exact_shapley_values(nonadditive_game, N_GAME)
    v_empty, v_full = game_endpoints(nonadditive_game, N_GAME)
    masks = draw_subsets("datashapley", N_GAME, 3000, seed=seed)
    phi = shapley_regression(masks, nonadditive_game(masks), v_empty, v_full)
    assert abs(phi.sum() - (v_full - v_empty)) < 1e-9
    # max |phi| is about 5.7; over 200 seeds the largest error seen was about 0.21
    assert np.abs(phi - phi_exact).max() < 0.3


def test_shapley_regression_depends_on_the_sampling_kernel():
    # the same regression on uniform draws (no kernel in the sampling) misses the Shapley values,
    # so the tolerance above is tight enough to catch a wrong distribution
    phi_exact = exact_shapley_values(nonadditive_game, N_GAME)
    v_empty, v_full = game_endpoints(nonadditive_game, N_GAME)
    masks = draw_subsets("uniform", N_GAME, 3000, seed=0)
    phi = shapley_regression(masks, nonadditive_game(masks), v_empty, v_full)
    assert abs(phi.sum() - (v_full - v_empty)) < 1e-9
    assert np.abs(phi - phi_exact).max() > 0.3


def test_shapley_regression_ignores_empty_and_full_rows_and_handles_few_subsets():
    v_empty, v_full = game_endpoints(nonadditive_game, N_GAME)
    masks = draw_subsets("datashapley", N_GAME, 500, seed=7)
    padded = np.vstack([np.zeros((3, N_GAME), bool), masks, np.ones((2, N_GAME), bool)])
    np.testing.assert_allclose(
        shapley_regression(padded, nonadditive_game(padded), v_empty, v_full),
        shapley_regression(masks, nonadditive_game(masks), v_empty, v_full),
    )
    few = masks[:2]  # rank-deficient: still a finite solution meeting the constraint
    phi = shapley_regression(few, nonadditive_game(few), v_empty, v_full)
    assert np.isfinite(phi).all() and abs(phi.sum() - (v_full - v_empty)) < 1e-9
    with pytest.raises(ValueError, match="neither empty nor full"):
        shapley_regression(padded[[0, -1]], nonadditive_game(padded[[0, -1]]), v_empty, v_full)


# ---------------------------------------------------------------- additive games: ridge, Banzhaf

def additive_game_data(kind, n, num_subsets, seed, noise=0.01):
    rng = np.random.default_rng(seed)
    weights = rng.normal(size=n)
    bias = 2.0
    masks = draw_subsets(kind, n, num_subsets, seed=seed + 1000)
    values = bias + masks @ weights + noise * rng.normal(size=num_subsets)
    return masks, values, weights, bias


def test_ridge_recovers_additive_weights_on_uniform_draws():
    masks, values, weights, bias = additive_game_data("uniform", 20, 1000, seed=0)
    scores, intercept, alpha = datamodel_ridge(masks, values)
    np.testing.assert_allclose(scores, weights, atol=0.02)
    assert intercept == pytest.approx(bias, abs=0.05)
    assert alpha > 0


def test_ridge_recovers_centered_weights_on_datamodel_draws():
    # every row keeps n/2 units, so only differences between weights are identified
    masks, values, weights, bias = additive_game_data("datamodel", 20, 1000, seed=1)
    scores, intercept, _ = datamodel_ridge(masks, values, cv=5)
    np.testing.assert_allclose(scores - scores.mean(), weights - weights.mean(), atol=0.02)
    np.testing.assert_allclose(predict_behaviour(scores, masks, intercept), values, atol=0.05)


def test_ridge_cross_validation_prefers_more_shrinkage_for_noisier_data():
    masks, clean, weights, bias = additive_game_data("uniform", 20, 200, seed=2, noise=0.01)
    noisy = clean + np.random.default_rng(3).normal(scale=20.0, size=len(clean))
    _, _, alpha_clean = datamodel_ridge(masks, clean)
    _, _, alpha_noisy = datamodel_ridge(masks, noisy)
    assert alpha_noisy > alpha_clean


def test_banzhaf_recovers_additive_weights_on_uniform_draws():
    masks, values, weights, _ = additive_game_data("uniform", 20, 4000, seed=4)
    # standard error of a difference of means is about 2 sd(values) / sqrt(M) ~ 0.07
    np.testing.assert_allclose(banzhaf(masks, values), weights, atol=0.3)


def test_banzhaf_is_exact_on_the_full_cube():
    n = 4
    masks = np.array(list(itertools.product([False, True], repeat=n)))
    weights = np.array([1.0, -2.0, 0.5, 3.0])
    values = 0.3 + masks @ weights + 4.0 * (masks[:, 0] & masks[:, 1])
    expected = weights + np.array([2.0, 2.0, 0.0, 0.0])  # the synergy splits as 4 * P(partner kept)
    np.testing.assert_allclose(banzhaf(masks, values), expected, atol=1e-12)


def test_banzhaf_rejects_units_never_removed():
    masks = draw_subsets("uniform", 5, 100, seed=0)
    masks[:, 3] = True
    with pytest.raises(ValueError, match=r"\[3\]"):
        banzhaf(masks, masks.sum(axis=1).astype(float))


def test_leave_one_out_and_prediction():
    masks = draw_subsets("loo", 4, 4, seed=0)
    weights = np.array([1.0, 2.0, -3.0, 0.5])
    v_full = 10.0 + weights.sum()
    without = 10.0 + masks @ weights
    np.testing.assert_allclose(leave_one_out(without, v_full), weights)
    np.testing.assert_allclose(predict_behaviour(weights, masks, intercept=10.0), without)


def test_estimators_reject_mismatched_inputs():
    masks = draw_subsets("uniform", 5, 10, seed=0)
    with pytest.raises(ValueError, match="shape"):
        banzhaf(masks, np.zeros(9))
    with pytest.raises(ValueError, match="non-finite"):
        datamodel_ridge(masks, np.full(10, np.nan))
    with pytest.raises(ValueError, match="do not match"):
        predict_behaviour(np.zeros(4), masks)


# ---------------------------------------------------------------- LDS

def test_lds_of_perfect_and_reversed_predictions():
    actual = np.random.default_rng(0).normal(size=50)
    assert lds(actual, actual) == pytest.approx(1.0)
    assert lds(np.exp(actual), actual) == pytest.approx(1.0)  # rank-based
    assert lds(-actual, actual) == pytest.approx(-1.0)
    assert np.isnan(lds(np.ones(50), actual))


def test_lds_with_ci_on_noisy_seeds():
    n, num_heldout, num_seeds = 30, 100, 5
    rng = np.random.default_rng(1)
    scores = rng.normal(size=n)
    heldout = draw_subsets("datamodel", n, num_heldout, seed=2)
    noiseless = predict_behaviour(scores, heldout)
    by_seed = noiseless + rng.normal(scale=1.0, size=(num_seeds, num_heldout))

    result = lds_with_ci(scores, heldout, by_seed)
    per_seed = np.array(result["per_seed"])
    assert len(per_seed) == num_seeds == result["num_seeds"]
    np.testing.assert_allclose(per_seed, [stats.spearmanr(noiseless, v).statistic for v in by_seed])
    assert result["low"] < result["mean"] < result["high"]
    half = stats.t.ppf(0.975, num_seeds - 1) * per_seed.std(ddof=1) / np.sqrt(num_seeds)
    assert result["high"] - result["low"] == pytest.approx(2 * half)
    assert 0.5 < result["mean"] < 1.0

    perfect = lds_with_ci(scores, heldout, np.tile(noiseless, (3, 1)), intercept=5.0)
    assert perfect["mean"] == pytest.approx(1.0)
    assert perfect["low"] == pytest.approx(1.0) and perfect["high"] == pytest.approx(1.0)

    single = lds_with_ci(scores, heldout, by_seed[0])
    assert single["num_seeds"] == 1 and np.isnan(single["low"]) and np.isnan(single["high"])


def test_lds_curve_has_one_entry_per_size_and_improves_with_more_subsets():
    masks, values, weights, bias = additive_game_data("datamodel", 40, 400, seed=5, noise=0.5)
    heldout = draw_subsets("datamodel", 40, 200, seed=6)
    rng = np.random.default_rng(7)
    heldout_by_seed = bias + heldout @ weights + 0.5 * rng.normal(size=(3, 200))
    sizes = [10, 50, 400]

    curve = lds_curve(lambda m, v: datamodel_ridge(m, v, cv=3), masks, values, heldout, heldout_by_seed, sizes)
    assert [point["num_subsets"] for point in curve] == sizes
    assert all(len(point["per_seed"]) == 3 for point in curve)
    assert curve[-1]["mean"] > 0.9
    assert curve[-1]["mean"] > curve[0]["mean"]

    banzhaf_curve = lds_curve(banzhaf, masks, values, heldout, heldout_by_seed, [400])
    assert len(banzhaf_curve) == 1 and banzhaf_curve[0]["mean"] > 0.9

    with pytest.raises(ValueError, match="outside"):
        lds_curve(banzhaf, masks, values, heldout, heldout_by_seed, [401])
