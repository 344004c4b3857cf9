"""Preference losses (diffunlearn.preference): DPO, SFT and NPO against independent float64 computations."""
import numpy as np
import pytest
import torch

from diffunlearn.choice import classifier_scores, make_pairs, wilson_interval, win_rate
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


# ---------------------------------------------------------------- the engine: frozen reference, paired batches
def _pairs_run(tmp_path, mode, init):
    from diffunlearn.config import validate_config
    from diffunlearn.data import load_digits_source
    from diffunlearn.objectives import descend_on
    from diffunlearn.preference import PreferenceLoss
    from diffunlearn.train import TrainRun, fine_tune_config

    from conftest import tiny_config

    cfg = validate_config(tiny_config("r"))
    images = load_digits_source()[0][:32]
    hp = {"steps": 3, "lr": 1e-3, "batch_size": 4, "ema_decay": 0.0, "grad_clip": 1.0}
    loss = PreferenceLoss(mode, beta=50.0)
    run = TrainRun(out_dir=str(tmp_path / mode), sources={"winners": images[:16], "losers": images[16:]},
                   train_cfg=fine_tune_config(cfg["train"], hp), model_cfg=cfg["model"], diffusion_cfg=cfg["diffusion"],
                   seed=0, objective=descend_on("winners"), init_from=init, init_weights="ema", loss=loss,
                   reference=None if mode == "sft" else "init")
    return run, loss


@pytest.fixture(scope="module")
def original(tmp_path_factory):
    from diffunlearn.config import validate_config
    from diffunlearn.data import load_digits_source
    from diffunlearn.train import TrainRun, run_training

    from conftest import tiny_config

    cfg = validate_config(tiny_config("r"))
    out = tmp_path_factory.mktemp("orig")
    run = TrainRun(out_dir=str(out), sources={"train": load_digits_source()[0][:64]}, train_cfg=cfg["train"],
                   model_cfg=cfg["model"], diffusion_cfg=cfg["diffusion"], seed=0)
    run_training(run, log=lambda m: None)
    return out / f"checkpoint-{cfg['train']['steps']}"


def _files_sha(folder):
    import hashlib

    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("mode", ["dpo", "npo"])
def test_reference_gets_no_gradient_and_is_unchanged(tmp_path, original, mode):
    from diffunlearn.checkpoint import load_ema_unet
    from diffunlearn.train import Trainer

    before = _files_sha(original)
    run, loss = _pairs_run(tmp_path, mode, str(original))
    trainer = Trainer(run, log=lambda m: None)
    reference = next(c.cell_contents for c in trainer.ctx.reference.__closure__
                     if isinstance(c.cell_contents, torch.nn.Module))
    ref_before = {k: v.clone() for k, v in reference.state_dict().items()}
    trainer.train()
    assert all(p.grad is None and not p.requires_grad for p in reference.parameters())
    assert all(torch.equal(v, ref_before[k]) for k, v in reference.state_dict().items())
    assert _files_sha(original) == before  # the reference checkpoint on disk too
    tuned, orig = load_ema_unet(tmp_path / mode / "checkpoint-3"), load_ema_unet(original)
    assert any(not torch.equal(a, b) for a, b in zip(tuned.state_dict().values(), orig.state_dict().values()))
    rows = loss.log_rows()
    assert [r["step"] for r in rows] == [0, 1, 2]
    assert all(r["reference_loss"] is not None for r in rows)
    # step 0: the model is a copy of the reference, so DPO's inside term is 0 and the accuracy a tie (1/2)
    assert rows[0]["model_loss"] == pytest.approx(rows[0]["reference_loss"], rel=1e-5)
    if mode == "dpo":
        assert rows[0]["implicit_accuracy"] == 0.5 and rows[0]["loss"] == pytest.approx(np.log(2), rel=1e-4)


def test_sft_needs_no_reference_and_dpo_without_one_fails(tmp_path, original):
    from diffunlearn.preference import PreferenceLoss
    from diffunlearn.train import run_training

    run, loss = _pairs_run(tmp_path, "sft", str(original))
    run_training(run, log=lambda m: None)
    assert all(r["implicit_accuracy"] is None and r["reference_loss"] is None for r in loss.log_rows())
    run, _ = _pairs_run(tmp_path / "x", "dpo", str(original))
    run.reference = None
    with pytest.raises(ValueError, match="needs a frozen reference"):
        run_training(run, log=lambda m: None)
    with pytest.raises(ValueError, match="mode 'kto'"):
        PreferenceLoss("kto")


# ---------------------------------------------------------------- pairs, scores, win rates
def test_make_pairs_orders_by_score_and_drops_ties_and_small_gaps():
    a = np.arange(5, dtype=np.uint8)[:, None, None, None] * np.ones((5, 2, 2, 1), np.uint8)
    b = a + 10
    sa, sb = np.array([0.9, 0.1, 0.5, 0.52, 0.3]), np.array([0.1, 0.9, 0.5, 0.5, 0.0])
    w, lo, sw, sl, keep = make_pairs(a, b, sa, sb, min_gap=0.05)
    assert keep.tolist() == [0, 1, 4]  # pair 2 a tie, pair 3 a gap of 0.02
    assert w[:, 0, 0, 0].tolist() == [0, 11, 4] and lo[:, 0, 0, 0].tolist() == [10, 1, 14]
    assert sw.tolist() == [0.9, 0.9, 0.3] and sl.tolist() == [0.1, 0.1, 0.0]


def test_wilson_interval_and_win_rate():
    # Wilson 95 % for 8 / 10 (independent closed form): centre (p + z^2/2n) / (1 + z^2/n)
    z, n, p = 1.959964, 10, 0.8
    c = (p + z**2 / (2 * n)) / (1 + z**2 / n)
    h = z * np.sqrt(p * (1 - p) / n + z**2 / (4 * n**2)) / (1 + z**2 / n)
    assert wilson_interval(8, 10) == pytest.approx((c - h, c + h))
    r = win_rate(np.array([1.0, 2.0, 3.0, 0.0]), np.array([0.0, 2.0, 1.0, 1.0]))
    assert r["win_rate"] == pytest.approx((1 + 0.5 + 1 + 0) / 4) and r["n_compared"] == 4
    b = win_rate(np.ones(200), np.zeros(200), interval="bootstrap", bootstrap=100)
    assert b["win_rate"] == b["win_rate_low"] == b["win_rate_high"] == 1.0


def test_classifier_scores_label_or_confidence():
    probs = np.array([[0.2, 0.7, 0.1], [0.5, 0.1, 0.4]])
    assert classifier_scores(probs, 2).tolist() == [0.1, 0.4]
    assert classifier_scores(probs, None).tolist() == [0.7, 0.5]
    with pytest.raises(ValueError, match="dpo.choice_model.label: 3 is not a class"):
        classifier_scores(probs, 3)


def test_user_function_choice_model_and_pairs_file(tmp_path, monkeypatch):
    from diffunlearn.choice import load_choice_model, read_pairs_file

    (tmp_path / "my_scores.py").write_text("def brightness(images):\n    return images.reshape(len(images), -1).mean(1)\n"
                                           "def wrong(images):\n    return [1.0]\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    score, identity = load_choice_model({"kind": "function", "function": "my_scores:brightness"})
    images = np.stack([np.full((8, 8, 1), v, np.uint8) for v in (10, 200, 50)])
    assert score(images).tolist() == [10.0, 200.0, 50.0]
    assert identity["name"] == "my_scores:brightness" and len(identity["source_sha256"]) == 64
    bad, _ = load_choice_model({"kind": "function", "function": "my_scores:wrong"})
    with pytest.raises(ValueError, match="returned .* scores for 3 images"):
        bad(images)
    with pytest.raises(ValueError, match="module 'my_scores' has no 'missing'"):
        load_choice_model({"kind": "function", "function": "my_scores:missing"})
    np.savez(tmp_path / "p.npz", winners=images, losers=images[::-1])
    w, lo = read_pairs_file(tmp_path / "p.npz", (8, 8, 1))
    assert (lo == images[::-1]).all()
    with pytest.raises(ValueError, match="winners must be uint8 \\[N, 4, 4, 1\\]"):
        read_pairs_file(tmp_path / "p.npz", (4, 4, 1))
    np.savez(tmp_path / "q.npz", winners=images)
    with pytest.raises(ValueError, match="missing array 'losers'"):
        read_pairs_file(tmp_path / "q.npz", (8, 8, 1))


def test_dpo_unlearning_pairs_every_retain_example_with_a_forget_example():
    from diffunlearn.unlearn import objective, preference_loss, preference_pairs, sources_of

    retain = np.arange(10, dtype=np.uint8)[:, None, None, None]
    forget = (100 + np.arange(3, dtype=np.uint8))[:, None, None, None]
    pairs = preference_pairs(retain, forget, seed=1)
    assert sorted(pairs["winners"].ravel().tolist()) == list(range(10))  # each retain example once
    counts = np.bincount(pairs["losers"].ravel() - 100)
    assert counts.tolist() == [4, 3, 3] or sorted(counts.tolist()) == [3, 3, 4]  # the forget set repeated evenly
    assert (preference_pairs(retain, forget, seed=1)["losers"] == pairs["losers"]).all()  # seeded
    assert objective("dpo", {})(0) == [("winners", 1.0)] and sources_of("dpo") == ("winners", "losers")
    assert objective("npo", {})(0) == [("forget", 1.0)] and preference_loss("npo", {"beta": 2.0}).beta == 2.0
    assert preference_loss("gd", {}) is None


def test_preference_losses_draw_uniform_t_whatever_the_engine_sampler():
    from diffunlearn.objectives import Batch, StepContext, UniformTimesteps
    from diffunlearn.preference import PreferenceLoss

    class Refuses:
        needs_losses = True

        def sample(self, n, generator):
            raise AssertionError("the preference loss must not use the run's timestep sampler")

    seen = []

    def forward(x_t, t):
        seen.append(t.clone())
        return torch.zeros_like(x_t)

    x0 = torch.zeros(6, 1, 8, 8)
    ctx = StepContext(forward=forward, alphas_cumprod=torch.linspace(0.99, 0.01, 1000), num_train_timesteps=1000,
                      device="cpu", part=slice(0, 6), sampler=Refuses(), reference=forward)
    batch = Batch(source="winners", x0=x0, n_global=6, take=lambda name: x0 + 1)
    PreferenceLoss("dpo", beta=1.0)(ctx, batch, torch.Generator().manual_seed(3))
    expected = UniformTimesteps(1000).sample(6, torch.Generator().manual_seed(3))
    assert torch.equal(seen[0], torch.cat([expected, expected]))  # winners and losers share uniform t
