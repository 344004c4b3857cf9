import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from diffusers import UNet2DModel

from diffunlearn.margins import compute_margins, margin_noise

T = 1000
ALPHAS_CUMPROD = torch.cumprod(1 - torch.linspace(1e-4, 0.02, T, dtype=torch.float32), dim=0)


def tiny_unet(seed: int) -> UNet2DModel:
    torch.manual_seed(seed)
    return UNet2DModel(
        sample_size=8,
        in_channels=1,
        out_channels=1,
        block_out_channels=(8, 16),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
        norm_num_groups=4,
    )


@pytest.fixture(scope="module")
def examples():
    generator = torch.Generator().manual_seed(0)
    x0 = torch.rand(12, 1, 8, 8, generator=generator) * 2 - 1
    indices = np.arange(100, 112) * 7  # dataset indices, not positions
    return x0, indices


def per_example_margins(unet, x0, indices, num_pairs, seed):
    """The definition, one example and one pair at a time."""
    unet.eval()
    margins = []
    with torch.no_grad():
        for example, index in zip(x0, indices):
            timesteps, noise = margin_noise(np.array([index]), num_pairs, tuple(x0.shape[1:]), T, seed)
            losses = []
            for t, eps in zip(timesteps[0], noise[0]):
                alpha_bar = float(ALPHAS_CUMPROD[t])
                eps = torch.from_numpy(eps)
                noisy = math.sqrt(alpha_bar) * example + math.sqrt(1 - alpha_bar) * eps
                predicted = unet(noisy[None].float(), torch.tensor([int(t)])).sample[0]
                losses.append(float(((eps - predicted) ** 2).mean()))
            margins.append(-np.mean(losses))
    return np.array(margins)


def test_tiny_unet_constructs_and_runs():
    unet = tiny_unet(0)
    out = unet(torch.zeros(2, 1, 8, 8), torch.tensor([0, 999])).sample
    assert out.shape == (2, 1, 8, 8)


def test_compute_margins_matches_the_definition_one_example_at_a_time(examples):
    x0, indices = examples
    unet = tiny_unet(0)
    got = compute_margins(unet, x0, indices, ALPHAS_CUMPROD, num_pairs=3, seed=5, batch_size=8)
    assert got.dtype == np.float64 and got.shape == (12,)
    np.testing.assert_allclose(got, per_example_margins(unet, x0, indices, 3, seed=5), rtol=1e-5, atol=1e-7)


def test_margin_of_a_model_predicting_zero_is_minus_the_mean_squared_noise(examples):
    class PredictsZero(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.unused = torch.nn.Parameter(torch.zeros(1))

        def forward(self, sample, timestep):
            return SimpleNamespace(sample=torch.zeros_like(sample))

    x0, indices = examples
    got = compute_margins(PredictsZero(), x0, indices, ALPHAS_CUMPROD, num_pairs=4, seed=1)
    _, noise = margin_noise(indices, 4, (1, 8, 8), T, 1)
    expected = -(noise.astype(np.float64) ** 2).mean(axis=(2, 3, 4)).mean(axis=1)
    np.testing.assert_allclose(got, expected, rtol=1e-6)


@pytest.mark.parametrize("batch_size", [1, 2, 5, 7, 64])
def test_compute_margins_does_not_depend_on_batch_size(examples, batch_size):
    x0, indices = examples
    unet = tiny_unet(1)
    reference = compute_margins(unet, x0, indices, ALPHAS_CUMPROD, num_pairs=3, seed=0, batch_size=36)
    got = compute_margins(unet, x0, indices, ALPHAS_CUMPROD, num_pairs=3, seed=0, batch_size=batch_size)
    np.testing.assert_allclose(got, reference, rtol=1e-5, atol=1e-7)


def test_compute_margins_does_not_depend_on_the_other_examples(examples):
    x0, indices = examples
    unet = tiny_unet(2)
    everything = compute_margins(unet, x0, indices, ALPHAS_CUMPROD, num_pairs=3, seed=0, batch_size=4)
    subset = [9, 2, 5]
    some = compute_margins(unet, x0[subset], indices[subset], ALPHAS_CUMPROD, num_pairs=3, seed=0, batch_size=4)
    np.testing.assert_allclose(some, everything[subset], rtol=1e-5, atol=1e-7)
    # The noise follows the example's index, not its position: renumbering changes the margin.
    renumbered = compute_margins(unet, x0[subset], indices[subset] + 1, ALPHAS_CUMPROD, num_pairs=3, seed=0)
    assert not np.allclose(renumbered, some)


class RecordsInputs(torch.nn.Module):
    """Wraps a model and keeps every (x_t, t) it is called with."""

    def __init__(self, unet):
        super().__init__()
        self.unet = unet
        self.calls = []

    def forward(self, sample, timestep):
        self.calls.append((sample.clone(), timestep.clone()))
        return self.unet(sample, timestep)


def test_two_models_are_scored_on_the_same_noisy_inputs(examples):
    x0, indices = examples
    first, second = RecordsInputs(tiny_unet(3)), RecordsInputs(tiny_unet(4))
    margins_first = compute_margins(first, x0, indices, ALPHAS_CUMPROD, num_pairs=2, seed=9, batch_size=10)
    margins_second = compute_margins(second, x0, indices, ALPHAS_CUMPROD, num_pairs=2, seed=9, batch_size=10)
    assert len(first.calls) == len(second.calls) == 3
    for (sample_a, t_a), (sample_b, t_b) in zip(first.calls, second.calls):
        assert torch.equal(sample_a, sample_b) and torch.equal(t_a, t_b)
    assert not np.allclose(margins_first, margins_second)  # the models differ, the inputs do not
    np.testing.assert_allclose(margins_second, per_example_margins(second.unet, x0, indices, 2, seed=9), rtol=1e-5, atol=1e-7)


def test_compute_margins_restores_training_mode(examples):
    x0, indices = examples
    unet = tiny_unet(0)
    unet.train()
    compute_margins(unet, x0[:2], indices[:2], ALPHAS_CUMPROD, num_pairs=1)
    assert unet.training
    unet.eval()
    compute_margins(unet, x0[:2], indices[:2], ALPHAS_CUMPROD, num_pairs=1)
    assert not unet.training


def test_compute_margins_rejects_mismatched_inputs(examples):
    x0, indices = examples
    with pytest.raises(ValueError, match="example_indices"):
        compute_margins(tiny_unet(0), x0, indices[:5], ALPHAS_CUMPROD)


def test_margin_noise_is_deterministic_per_seed_index_and_pair():
    timesteps, noise = margin_noise(np.array([3, 40, 7]), 4, (2, 3, 3), T, seed=11)
    assert timesteps.dtype == np.int64 and timesteps.shape == (3, 4)
    assert noise.dtype == np.float32 and noise.shape == (3, 4, 2, 3, 3)
    again_t, again_noise = margin_noise(np.array([3, 40, 7]), 4, (2, 3, 3), T, seed=11)
    np.testing.assert_array_equal(again_t, timesteps)
    np.testing.assert_array_equal(again_noise, noise)
    # A row depends only on its own index: alone, reordered or among others.
    alone_t, alone_noise = margin_noise(np.array([40]), 4, (2, 3, 3), T, seed=11)
    np.testing.assert_array_equal(alone_t[0], timesteps[1])
    np.testing.assert_array_equal(alone_noise[0], noise[1])
    reordered_t, reordered_noise = margin_noise(np.array([7, 3]), 4, (2, 3, 3), T, seed=11)
    np.testing.assert_array_equal(reordered_t, timesteps[[2, 0]])
    np.testing.assert_array_equal(reordered_noise, noise[[2, 0]])
    # Pair k does not depend on how many pairs are drawn.
    more_t, more_noise = margin_noise(np.array([3, 40, 7]), 6, (2, 3, 3), T, seed=11)
    np.testing.assert_array_equal(more_t[:, :4], timesteps)
    np.testing.assert_array_equal(more_noise[:, :4], noise)


def test_margin_noise_differs_across_seeds_indices_and_pairs():
    timesteps, noise = margin_noise(np.array([0, 1]), 2, (1, 4, 4), T, seed=0)
    other_t, other_noise = margin_noise(np.array([0, 1]), 2, (1, 4, 4), T, seed=1)
    assert not np.array_equal(noise, other_noise) and not np.array_equal(timesteps, other_t)
    assert not np.array_equal(noise[0], noise[1])
    assert not np.array_equal(noise[0, 0], noise[0, 1])


def test_margin_noise_distribution():
    timesteps, noise = margin_noise(np.arange(2000), 4, (1, 4, 4), T, seed=0)
    assert timesteps.min() >= 0 and timesteps.max() < T
    counts = np.bincount(timesteps.ravel() // 100, minlength=10)
    assert counts.min() > 0.8 * counts.mean()  # each tenth of [0, T) gets its share of 8000 draws
    assert abs(noise.mean()) < 0.01 and abs(noise.std() - 1) < 0.01


def test_margin_timesteps_range_and_stratified():
    indices = np.arange(500)
    uniform_t, uniform_noise = margin_noise(indices, 4, (1, 2, 2), T, seed=3)
    # "uniform" is the default: the same draws as before the option existed
    explicit_t, explicit_noise = margin_noise(indices, 4, (1, 2, 2), T, seed=3, timesteps="uniform")
    np.testing.assert_array_equal(explicit_t, uniform_t)
    ranged_t, ranged_noise = margin_noise(indices, 4, (1, 2, 2), T, seed=3, timesteps=[10, 199])
    assert ranged_t.min() >= 10 and ranged_t.max() <= 199
    assert set(np.unique(ranged_t // 19)) >= set(range(1, 10))  # spread over the range
    np.testing.assert_array_equal(ranged_noise, uniform_noise)  # the noise stream does not change
    strat_t, _ = margin_noise(indices, 4, (1, 2, 2), T, seed=3, timesteps="stratified")
    for k in range(4):
        assert strat_t[:, k].min() >= 250 * k and strat_t[:, k].max() < 250 * (k + 1)
        assert strat_t[:, k].max() - strat_t[:, k].min() > 200
    one_t, _ = margin_noise(indices, 4, (1, 2, 2), T, seed=3, timesteps=[7, 7])
    assert (one_t == 7).all()
    for bad in ([5, 4], [0, T], "lowhigh", [1, 2, 3]):
        with pytest.raises(ValueError, match="margins.timesteps"):
            margin_noise(indices, 4, (1, 2, 2), T, seed=3, timesteps=bad)


def test_compute_margins_with_a_timestep_range_matches_the_definition(examples):
    x0, indices = examples
    unet = tiny_unet(0)
    got = compute_margins(unet, x0, indices, ALPHAS_CUMPROD, num_pairs=3, seed=5, batch_size=8, timesteps=[0, 99])
    default = compute_margins(unet, x0, indices, ALPHAS_CUMPROD, num_pairs=3, seed=5, batch_size=8)
    assert not np.allclose(got, default)
    unet.eval()
    expected = []
    with torch.no_grad():
        for example, index in zip(x0, indices):
            timesteps, noise = margin_noise(np.array([index]), 3, tuple(x0.shape[1:]), T, 5, timesteps=[0, 99])
            losses = []
            for t, eps in zip(timesteps[0], torch.from_numpy(noise[0])):
                alpha_bar = float(ALPHAS_CUMPROD[t])
                noisy = math.sqrt(alpha_bar) * example + math.sqrt(1 - alpha_bar) * eps
                losses.append(float(((eps - unet(noisy[None].float(), torch.tensor([int(t)])).sample[0]) ** 2).mean()))
            expected.append(-np.mean(losses))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError, match="margins.timesteps"):
        compute_margins(unet, x0, indices, ALPHAS_CUMPROD, num_pairs=3, timesteps=[0, 5000])
