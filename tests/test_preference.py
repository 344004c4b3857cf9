"""Preference losses (diffunlearn.preference): DPO, SFT and NPO against independent float64 computations."""
import numpy as np
import pytest
import torch

from diffunlearn.preference import dpo_loss, npo_loss, sft_loss


def _random(n=64, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.uniform(0.0, 0.5, n) for _ in range(4)]


@pytest.mark.parametrize("beta", [1.0, 500.0, 5000.0])
def test_dpo_loss_and_accuracy_equal_the_formula(beta):
    mw, ml, rw, rl = _random(seed=int(beta))
    z = -beta / 2 * ((mw - rw) - (ml - rl))
    expected_loss = np.mean(np.logaddexp(0.0, -z))  # -log sigmoid(z), stable
    expected_acc = np.mean(np.where(z > 0, 1.0, np.where(z == 0, 0.5, 0.0)))
    loss, acc = dpo_loss(*(torch.tensor(a, dtype=torch.float64) for a in (mw, ml, rw, rl)), beta)
    assert loss.shape == () and acc.shape == ()
    np.testing.assert_allclose(loss.item(), expected_loss, rtol=1e-12)
    assert acc.item() == pytest.approx(expected_acc)
    assert np.isfinite(loss.item())


def test_dpo_accuracy_counts_a_tie_as_one_half_and_loss_at_a_tie_is_log2():
    zeros = torch.zeros(4, dtype=torch.float64)
    loss, acc = dpo_loss(zeros, zeros, zeros, zeros, 100.0)
    assert acc.item() == 0.5
    assert loss.item() == pytest.approx(np.log(2.0))
    # model = reference except a better winner on pair 0 and a worse one on pair 1: accuracy (1 + 0 + 2 * 0.5) / 4
    mw = torch.tensor([0.1, 0.3, 0.2, 0.2], dtype=torch.float64)
    ref = torch.full((4,), 0.2, dtype=torch.float64)
    assert dpo_loss(mw, ref, ref, ref, 10.0)[1].item() == 0.5


def test_dpo_loss_is_stable_for_large_beta():
    mw, ml, rw, rl = (torch.tensor(a) for a in _random(seed=3))
    loss, _ = dpo_loss(mw * 100, ml, rw, rl, 1e6)
    assert torch.isfinite(loss)


def test_sft_loss_is_the_plain_loss_on_winners():
    mw = _random(seed=1)[0]
    assert sft_loss(torch.tensor(mw)).item() == pytest.approx(mw.mean(), rel=1e-12)


@pytest.mark.parametrize("beta", [0.1, 1.0, 50.0])
def test_npo_loss_equals_its_formula(beta):
    mf, rf = _random(seed=2)[:2]
    # (2/beta) mean log(1 + (pi/pi_ref)^beta) with log pi = -loss
    expected = 2.0 / beta * np.mean(np.log1p(np.exp(beta * (-mf - -rf))))
    assert npo_loss(torch.tensor(mf), torch.tensor(rf), beta).item() == pytest.approx(expected, rel=1e-10)


def test_npo_gradient_is_bounded_and_vanishes_where_gradient_ascent_does_not():
    n, beta = 8, 10.0
    ref = torch.full((n,), 0.1, dtype=torch.float64)
    grads_npo, grads_ga = [], []
    for level in [0.0, 0.1, 1.0, 10.0, 100.0]:
        model_f = torch.full((n,), level, dtype=torch.float64, requires_grad=True)
        npo_loss(model_f, ref, beta).backward()
        grads_npo.append(model_f.grad.abs().max().item() * n)  # per example, undoing the mean
        model_f = torch.full((n,), level, dtype=torch.float64, requires_grad=True)
        (-model_f).mean().backward()  # gradient ascent on the denoising loss
        grads_ga.append(model_f.grad.abs().max().item() * n)
        assert torch.allclose(model_f.grad.abs() * n, torch.ones(n, dtype=torch.float64))
    assert max(grads_npo) <= 2.0
    # independent: -2 sigmoid(beta (ref - model)) per example
    expected = [2 * np.exp(-np.logaddexp(0.0, -beta * (0.1 - lv))) for lv in [0.0, 0.1, 1.0, 10.0, 100.0]]
    np.testing.assert_allclose(grads_npo, expected, rtol=1e-9, atol=1e-300)
    assert grads_npo[-1] < 1e-6 < grads_ga[-1] == 1.0
