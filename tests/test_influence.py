"""Influence unlearning (WoodFisher): the update equals the dense-matrix computation done independently."""
import numpy as np
import pytest
import torch

from diffunlearn.influence import draws, influence_unlearn, inverse_fisher_product


class TinyDenoiser(torch.nn.Module):
    """A model with 15 parameters (3x3 conv, bias, and a timestep scale): small enough for a dense Fisher."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 1, 3, padding=1)
        self.scale = torch.nn.Parameter(torch.tensor([0.3, -0.2, 0.1, 0.05, 0.01]))

    def forward(self, x, t):
        h = self.conv(x)
        return torch.tanh(h) * (1 + self.scale[t % 5].view(-1, 1, 1, 1))


def _dense_update(model, forget, retain, alphas, hp):
    """w + ratio * (damping I + G^T G / N)^-1 v, with the gradients computed example by example here and the
    Fisher built and solved in numpy."""
    params = list(model.parameters())
    g = torch.Generator().manual_seed(hp["seed"])
    pick_f = torch.randperm(len(forget), generator=g)[: hp["num_forget"] or len(forget)]
    pick_w = torch.randperm(len(retain), generator=g)[: hp["num_retain"]]
    f_t, f_noise = draws(len(pick_f), forget.shape[1:], len(alphas), g)
    r_t, r_noise = draws(len(retain), retain.shape[1:], len(alphas), g)

    def grad(x0, t, noise):
        a, noise = alphas[t], noise.double()
        x_t = a.sqrt() * x0 + (1 - a).sqrt() * noise
        loss = ((model(x_t[None], t.view(1)) - noise[None]) ** 2).mean()
        return np.concatenate([gr.detach().numpy().ravel() for gr in torch.autograd.grad(loss, params)]).astype(np.float64)

    gf = np.mean([grad(forget[pick_f[i]], f_t[i], f_noise[i]) for i in range(len(pick_f))], axis=0)
    gr_all = [grad(retain[i], r_t[i], r_noise[i]) for i in range(len(retain))]
    n_f, n_r = len(pick_f), len(retain)
    v = n_f / (n_f + n_r) * (gf - np.mean(gr_all, axis=0))
    G = np.stack([gr_all[int(i)] for i in pick_w])
    fisher = hp["damping"] * np.eye(len(v)) + G.T @ G / len(G)
    w = np.concatenate([p.detach().numpy().ravel() for p in params]).astype(np.float64)
    return w + hp["ratio"] * np.linalg.solve(fisher, v)


@pytest.mark.parametrize("damping", [1.0, 1e-3])
def test_influence_step_equals_the_dense_inverse_fisher_computation(damping):
    torch.manual_seed(0)
    forget, retain = torch.randn(5, 1, 4, 4), torch.randn(12, 1, 4, 4)
    alphas = torch.linspace(0.99, 0.2, 10)
    hp = {"ratio": 0.5, "num_retain": 8, "num_forget": 4, "damping": damping, "batch_size": 3, "seed": 3,
          "max_params": 100}
    model = TinyDenoiser().double()
    forget, retain, alphas = forget.double(), retain.double(), alphas.double()
    expected = _dense_update(model, forget, retain, alphas, hp)
    record = influence_unlearn(model, forget, retain, alphas, hp)
    got = np.concatenate([p.detach().numpy().ravel() for p in model.parameters()])
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-12)
    assert record["forget_examples"] == 4 and record["fisher_examples"] == 8 and record["step_norm"] > 0


def test_sherman_morrison_product_matches_the_inverse():
    rng = np.random.default_rng(0)
    G, v = rng.normal(size=(6, 9)), rng.normal(size=9)
    got = inverse_fisher_product(iter(torch.from_numpy(G)), torch.from_numpy(v), 0.01, 6).numpy()
    np.testing.assert_allclose(got, np.linalg.solve(0.01 * np.eye(9) + G.T @ G / 6, v), rtol=1e-8)


def test_too_large_a_model_is_refused_before_work():
    hp = {"ratio": 0.5, "num_retain": 8, "num_forget": None, "damping": 1.0, "batch_size": 3, "seed": 0, "max_params": 10}
    with pytest.raises(ValueError, match="unlearning.iu.max_params: the model has 15 parameters"):
        influence_unlearn(TinyDenoiser(), torch.zeros(2, 1, 4, 4), torch.zeros(3, 1, 4, 4), torch.ones(10), hp)
