"""Loss weightings and timestep samplers (diffunlearn.weighting) against independent computations of their formulas."""
import numpy as np
import pytest
import torch
from scipy import stats

from diffunlearn import weighting as W


def _alphas_cumprod(T=1000, start=1e-4, end=0.02):
    """The linear DDPM schedule in float64, computed here (not by diffusers)."""
    return np.cumprod(1.0 - np.linspace(start, end, T))


def _snr(ac):
    return ac / (1.0 - ac)


AC = _alphas_cumprod()


def test_uniform_weights_are_ones():
    assert torch.equal(W.loss_weights("uniform", AC), torch.ones(1000))


@pytest.mark.parametrize("prediction,expected", [
    ("epsilon", lambda s: np.minimum(s, 5.0) / s),
    ("v_prediction", lambda s: np.minimum(s, 5.0) / (s + 1.0)),
    ("sample", lambda s: np.minimum(s, 5.0)),
])
def test_min_snr_matches_its_formula_at_every_t(prediction, expected):
    w = W.loss_weights("min_snr", torch.tensor(AC), prediction_type=prediction)
    assert w.shape == (1000,)
    np.testing.assert_allclose(w.numpy(), expected(_snr(AC)), rtol=1e-5)


@pytest.mark.parametrize("gamma", [0.5, 1.0])
def test_p2_matches_its_formula_at_every_t(gamma):
    w = W.loss_weights("p2", AC, gamma=gamma)
    np.testing.assert_allclose(w.numpy(), 1.0 / (1.0 + _snr(AC)) ** gamma, rtol=1e-5)


def test_speed_tau_is_642_for_the_linear_1000_step_schedule():
    assert W.speed_tau(AC) == 642
    assert W.speed_tau(torch.tensor(AC, dtype=torch.float32)) == 642


def test_speed_change_aware_weights_match_their_formula():
    lam, tau = 0.7, 642
    g = np.empty(1000)
    v = 1.0 - AC
    g[1:-1] = (v[2:] - v[:-2]) / 2  # central differences, one-sided at the ends
    g[0], g[-1] = v[1] - v[0], v[-1] - v[-2]
    g = (g - g.min()) / (g.max() - g.min())
    expected = np.where(np.arange(1000) < tau, (1 - lam) + (2 * lam - 1) * g, 1.0)
    np.testing.assert_allclose(W.loss_weights("speed", AC, lam=lam).numpy(), expected, rtol=1e-6)
    assert W.loss_weights("speed", AC, lam=lam)[:tau].min() >= 1 - lam - 1e-7


def test_speed_probs_suppress_the_convergence_area_k_to_1():
    p = W.timestep_probs("speed", AC).numpy()
    z = 5 * 642 + (1000 - 642)
    np.testing.assert_allclose(p, np.where(np.arange(1000) < 642, 5 / z, 1 / z), rtol=1e-12)
    assert W.timestep_probs("uniform", AC).sum().item() == pytest.approx(1.0)


def _chi_square_p(sampler, n=200_000, seed=0):
    g = torch.Generator().manual_seed(seed)
    t = sampler.sample(n, g)
    observed = np.bincount(t.numpy(), minlength=sampler.num_timesteps)
    expected = sampler.probs().numpy() * n
    return stats.chisquare(observed, expected).pvalue


def test_fixed_samplers_draw_their_distribution():
    for cfg in ({"scheme": "uniform"}, {"scheme": "speed"}, {"scheme": "speed", "k": 2.0, "tau": 300}):
        assert _chi_square_p(W.make_sampler(cfg, AC)) > 1e-3, cfg


def test_uniform_sampler_draws_as_torch_randint():
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    assert torch.equal(W.make_sampler(None, AC).sample(64, g1), torch.randint(0, 1000, (64,), generator=g2))


def _fed_importance(T=50):
    s = W.ImportanceSampler(T)
    rng = np.random.default_rng(0)
    for _ in range(40):
        t = torch.arange(T)
        s.update(t, torch.tensor(rng.uniform(0.1, 1.0, T) * (1 + np.arange(T))))
    return s


def test_importance_sampler_is_uniform_until_every_t_has_its_history():
    s = W.ImportanceSampler(20)
    s.update(torch.arange(19).repeat(10), torch.ones(190))
    assert not s.warmed_up() and torch.allclose(s.probs(), torch.full((20,), 0.05, dtype=torch.float64))
    s.update(torch.full((10,), 19), torch.full((10,), 4.0))
    assert s.warmed_up()
    rms = np.array([1.0] * 19 + [4.0])
    np.testing.assert_allclose(s.probs().numpy(), 0.999 * rms / rms.sum() + 0.001 / 20)


def test_importance_sampler_keeps_the_last_10_losses():
    s = W.ImportanceSampler(1)
    s.update(torch.zeros(15, dtype=torch.long), torch.arange(15.0))
    np.testing.assert_array_equal(s.state_dict()["losses"][0], np.arange(5.0, 15.0))


def test_importance_sampler_draws_its_distribution_and_is_unbiased():
    s = _fed_importance()
    p = s.probs().numpy()
    assert p.max() / p.min() > 10  # far from uniform
    assert _chi_square_p(s) > 1e-3
    # a fixed loss table: the weighted loss's exact expectation under p is the uniform mean
    table = np.random.default_rng(1).uniform(0, 3, 50)
    w = s.weights(torch.arange(50)).double().numpy()
    assert float((p * w * table).sum()) == pytest.approx(table.mean(), rel=1e-6)


def _fed_decrease(unbiased=False, T=100):
    s = W.LossDecreaseSampler(T, bins=10, warmup_visits=3, unbiased=unbiased)
    for step in range(30):  # the loss falls fast in bins 0-2, slowly elsewhere
        t = torch.arange(T)
        rate = np.where(np.arange(T) < 30, 0.9, 0.995)
        s.update(t, torch.tensor(rate**step))
    return s


def test_loss_decrease_sampler_favours_falling_bins_and_draws_its_distribution():
    s = _fed_decrease()
    p = s.probs().numpy()
    r = []
    for rate in (0.9, 0.995):  # the two averages of 30 visits, by hand
        fast = slow = 1.0
        for step in range(1, 30):
            fast, slow = 0.8 * fast + 0.2 * rate**step, 0.95 * slow + 0.05 * rate**step
        r.append((slow - fast) / slow)
    per_t = np.where(np.arange(100) < 30, r[0], r[1]) / (30 * r[0] + 70 * r[1])
    np.testing.assert_allclose(p, 0.7 * per_t + 0.3 / 100, rtol=1e-9)
    assert p[:30].sum() > 0.6
    assert _chi_square_p(s) > 1e-3
    assert torch.equal(s.weights(torch.arange(5)), torch.ones(5))
    u = _fed_decrease(unbiased=True)
    table = np.random.default_rng(2).uniform(0, 1, 100)
    w = u.weights(torch.arange(100)).double().numpy()
    assert float((u.probs().numpy() * w * table).sum()) == pytest.approx(table.mean(), rel=1e-6)


def _fed_fast(T=100, **params):
    s = W.FastImportanceSampler(T, bins=10, **params)
    rng = np.random.default_rng(3)
    for _ in range(5):  # one visit of every bin per step; the loss grows with the bin
        t = torch.arange(T)
        s.update(t, torch.tensor(rng.uniform(0.5, 1.5, T) * (1 + np.arange(T) // 10)))
    return s


def test_fast_importance_is_uniform_until_every_bin_has_two_visits():
    s = W.FastImportanceSampler(100, bins=10)
    s.update(torch.arange(90), torch.ones(90))  # bins 0-8 once
    s.update(torch.arange(90), torch.ones(90))  # bins 0-8 twice, bin 9 never
    assert torch.equal(s.probs(), torch.full((100,), 0.01, dtype=torch.float64))
    s.update(torch.arange(90, 100), torch.full((10,), 3.0))
    s.update(torch.arange(90, 100), torch.full((10,), 3.0))
    assert not torch.allclose(s.probs(), torch.full((100,), 0.01, dtype=torch.float64))


def test_fast_importance_probs_follow_the_binned_moving_rms_of_the_loss():
    s = W.FastImportanceSampler(100, bins=10, decay=0.5, uniform_share=0.1, power=1.0)
    losses = [np.arange(100) // 10 + 1.0, np.full(100, 2.0), np.arange(100) % 10 + 0.0]
    for step_losses in losses:
        s.update(torch.arange(100), torch.tensor(step_losses))
    # by hand: per bin, the mean squared loss of each visit, then m <- 0.5 m + 0.5 x after the first visit
    bins = np.arange(100) // 10
    m = np.array([np.mean(losses[0][bins == b] ** 2) for b in range(10)])
    for step_losses in losses[1:]:
        m = 0.5 * m + 0.5 * np.array([np.mean(step_losses[bins == b] ** 2) for b in range(10)])
    score = np.sqrt(m)
    expected = 0.9 * score[bins] / (10 * score).sum() + 0.1 / 100
    np.testing.assert_allclose(s.probs().numpy(), expected, rtol=1e-12)
    w = s.weights(torch.arange(100)).double().numpy()  # before any draw: the weights of the current distribution
    np.testing.assert_allclose(w, 1 / (100 * expected), rtol=1e-6)
    assert w.max() <= 1 / 0.1 + 1e-6  # the uniform share bounds every weight by 1 / u


@pytest.mark.parametrize("stratified", [True, False])
def test_fast_importance_draws_its_distribution_and_is_unbiased(stratified):
    s = _fed_fast(stratified=stratified)
    p = s.probs().numpy()
    assert p.max() / p.min() > 5  # far from uniform
    assert _chi_square_p(s) > 1e-3
    table = np.random.default_rng(4).uniform(0, 2, 100)  # a fixed loss table: E_p[w_t L_t] is its uniform mean
    w = s.weights(torch.arange(100)).double().numpy()
    assert float((p * w * table).sum()) == pytest.approx(table.mean(), rel=1e-6)
    # and by simulation: the weighted batch mean of the table over many drawn batches
    g = torch.Generator().manual_seed(1)
    means = []
    for _ in range(2000):
        t = s.sample(64, g)
        means.append(float((s.weights(t).double() * torch.from_numpy(table)[t]).mean()))
    assert abs(np.mean(means) - table.mean()) < 4 * np.std(means) / np.sqrt(len(means))
    biased = _fed_fast(unbiased=False)
    assert torch.equal(biased.weights(torch.arange(5)), torch.ones(5))


def test_fast_importance_with_an_allocation_keeps_that_allocations_objective():
    """With k != 1 the draws are importance-sampled for SpeeD's k:1 allocation q instead of the uniform one:
    p = (1 - u) q s / sum(q s) + u q, weights q_t / p_t, so E_p[w_t L_t] = sum_t q_t L_t."""
    T, u = 100, 0.05
    q_by_hand = np.where(np.arange(T) < 40, 5.0, 1.0)
    q_by_hand /= q_by_hand.sum()
    s = W.make_sampler({"scheme": "fast_importance", "bins": 10, "k": 5, "tau": 40}, _alphas_cumprod(T))
    np.testing.assert_allclose(s.probs().numpy(), q_by_hand, rtol=1e-12)  # before the warm-up: q itself
    rng = np.random.default_rng(6)
    for _ in range(3):  # three visits of every bin
        s.update(torch.arange(T), torch.tensor(rng.uniform(0.5, 1.5, T) * (1 + np.arange(T) // 10)))
    rms = np.sqrt(s.state_dict()["second_moment"])[np.arange(T) // 10]
    expected = (1 - u) * q_by_hand * rms / (q_by_hand * rms).sum() + u * q_by_hand
    np.testing.assert_allclose(s.probs().numpy(), expected, rtol=1e-12)
    w = s.weights(torch.arange(T)).double().numpy()
    np.testing.assert_allclose(w, q_by_hand / expected, rtol=1e-6)
    assert w.max() <= 1 / u + 1e-6
    table = np.random.default_rng(7).uniform(0, 2, T)
    assert float((expected * w * table).sum()) == pytest.approx(float((q_by_hand * table).sum()), rel=1e-6)
    assert float((q_by_hand * table).sum()) != pytest.approx(table.mean(), rel=1e-3)  # not the uniform objective
    assert _chi_square_p(s) > 1e-3
    plain = W.make_sampler({"scheme": "fast_importance", "k": 1}, AC)  # k = 1: the uniform objective
    np.testing.assert_allclose(plain.prior.numpy(), np.full(1000, 1e-3), rtol=1e-12)
    speed_q = W.make_sampler({"scheme": "fast_importance", "k": 5}, AC).prior  # tau from the schedule: 642
    np.testing.assert_allclose(speed_q.numpy(), W.timestep_probs("speed", AC, k=5).numpy(), rtol=1e-12)


def test_stratified_draws_put_one_draw_in_every_quantile_stratum():
    p = torch.from_numpy(np.random.default_rng(5).dirichlet(np.ones(30)))
    cdf = np.cumsum(p.numpy())
    g = torch.Generator().manual_seed(0)
    for _ in range(50):
        t = W.stratified_draws(p, 40, g).numpy()
        # draws at or below each t: within one of 40 * cdf (independent draws miss this by sqrt(40) or so)
        below = np.array([(t <= k).sum() for k in range(30)])
        assert np.all(np.abs(below - 40 * cdf) <= 1 + 1e-9)
    independent = torch.multinomial(p, 40 * 50, replacement=True, generator=g).view(50, 40).numpy()
    worst = max(np.abs(np.array([(row <= k).sum() for k in range(30)]) - 40 * cdf).max() for row in independent)
    assert worst > 1  # the property above is one independent draws lack


def _fresh_like(s):
    if isinstance(s, W.LossDecreaseSampler):
        return type(s)(s.num_timesteps, bins=10, warmup_visits=3)
    if isinstance(s, W.FastImportanceSampler):
        return type(s)(s.num_timesteps, bins=10)
    return type(s)(s.num_timesteps)


@pytest.mark.parametrize("make", [_fed_importance, _fed_decrease, _fed_fast])
def test_adaptive_state_round_trips_exactly(make):
    import json

    s = make()
    fresh = _fresh_like(s)
    fresh.load_state_dict(json.loads(json.dumps(s.state_dict())))
    assert torch.equal(fresh.probs(), s.probs())
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    assert torch.equal(fresh.sample(32, g1), s.sample(32, g2))


def test_job_params_leave_uniform_out_and_resolve_the_rest():
    base = {"steps": 10, "lr": 1e-3}
    assert W.job_params({**base, "timesteps": {"scheme": "uniform"}, "loss_weighting": {"scheme": "uniform"}}) == base
    out = W.job_params({**base, "loss_weighting": {"scheme": "p2", "gamma": 0.5}})
    assert out["loss_weighting"] == {"scheme": "p2", "k": 1.0, "gamma": 0.5}


def test_bad_scheme_or_parameter_is_a_one_line_error():
    with pytest.raises(ValueError, match=r"train.timesteps.scheme: unknown scheme 'fast'"):
        W.make_sampler({"scheme": "fast"}, AC)
    with pytest.raises(ValueError, match=r"train.loss_weighting.lam: not a parameter of scheme 'p2'"):
        W.job_params({"loss_weighting": {"scheme": "p2", "lam": 0.5}})


def test_engine_hooks_build_the_configured_sampler_and_weights():
    from types import SimpleNamespace

    assert W.engine_hooks({"timesteps": {"scheme": "uniform"}}) == {}
    hooks = W.engine_hooks({"timesteps": {"scheme": "speed"}, "loss_weighting": {"scheme": "p2", "gamma": 0.5}})
    scheduler = SimpleNamespace(alphas_cumprod=torch.tensor(AC, dtype=torch.float32))
    np.testing.assert_allclose(hooks["timesteps"](scheduler).probs().numpy(), W.timestep_probs("speed", AC).numpy(),
                               rtol=1e-5)
    np.testing.assert_allclose(hooks["weighting"](scheduler).numpy(), 1 / np.sqrt(1 + _snr(AC)), rtol=1e-4)
    with pytest.raises(ValueError, match="train.timesteps.scheme: 'loss_decrease' learns from the losses"):
        W.engine_hooks({"timesteps": {"scheme": "loss_decrease"}, "num_processes": 2})



def test_importance_weights_are_those_of_the_distribution_drawn_from():
    """The engine may read weights(t) after observe(): they still refer to the draw's distribution."""
    s = _fed_importance()
    t = s.sample(16, torch.Generator().manual_seed(0))
    before = s.weights(t)
    np.testing.assert_allclose(before.numpy(), (1 / (50 * s.probs()[t])).numpy(), rtol=1e-6)
    s.update(t, torch.full((16,), 100.0))  # changes the distribution
    assert not torch.allclose(s.probs()[t], s.drawn_probs()[t])
    assert torch.equal(s.weights(t), before)
