"""Inception Score and precision / recall against straightforward implementations of their definitions."""
from __future__ import annotations

import math

import numpy as np
import pytest

from diffunlearn.metrics.inception_score import inception_score
from diffunlearn.metrics.precision_recall import precision_recall

torch = pytest.importorskip("torch")


def is_by_definition(logits: np.ndarray, splits: int) -> tuple[float, float]:
    """exp(mean_x KL(p(y|x) || p(y))) per consecutive split, loops and math only."""
    n = len(logits)
    scores = []
    for s in range(splits):
        rows = logits[s * n // splits : (s + 1) * n // splits]
        probs = []
        for row in rows:
            m = max(row)
            e = [math.exp(v - m) for v in row]
            z = sum(e)
            probs.append([v / z for v in e])
        marginal = [sum(p[c] for p in probs) / len(probs) for c in range(len(row))]
        kl = [sum(p[c] * math.log(p[c] / marginal[c]) for c in range(len(row)) if p[c] > 0) for p in probs]
        scores.append(math.exp(sum(kl) / len(kl)))
    mean = sum(scores) / splits
    return mean, math.sqrt(sum((s - mean) ** 2 for s in scores) / splits)


def test_inception_score_equals_definition():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, (103, 17))  # 103 rows: splits of unequal size
    mean, std = inception_score(logits, splits=10, shuffle=False)
    ref_mean, ref_std = is_by_definition(logits, 10)
    assert mean == pytest.approx(ref_mean, rel=1e-10)
    assert std == pytest.approx(ref_std, rel=1e-8)
    assert 1.0 < mean < 17.0 and std > 0


def test_inception_score_shuffles_like_torch_fidelity():
    rng = np.random.default_rng(1)
    logits = rng.normal(0, 2, (50, 8))
    perm = np.random.RandomState(2020).permutation(50)
    assert inception_score(logits, splits=5) == pytest.approx(is_by_definition(logits[perm], 5), rel=1e-10)
    # torch tensors (float32 too) are accepted
    assert inception_score(torch.from_numpy(logits), splits=5) == pytest.approx(inception_score(logits, splits=5))


def test_inception_score_bounds():
    confident_uniform = np.eye(10).repeat(10, axis=0) * 200.0  # each class equally often, one-hot
    mean, std = inception_score(confident_uniform, splits=1)
    assert mean == pytest.approx(10.0, rel=1e-9) and std == 0.0
    constant = np.zeros((20, 10))
    assert inception_score(constant, splits=2) == pytest.approx((1.0, 0.0))
    with pytest.raises(ValueError):
        inception_score(np.zeros((5, 3)), splits=10)


def pr_brute_force(real: np.ndarray, fake: np.ndarray, k: int) -> tuple[float, float]:
    def radii(x):
        out = []
        for i, a in enumerate(x):
            d = sorted(float(np.sum((a - b) ** 2)) for j, b in enumerate(x) if j != i)
            out.append(d[k - 1])
        return out

    def covered(queries, centres, r):
        return sum(any(np.sum((q - c) ** 2) <= rc for c, rc in zip(centres, r)) for q in queries) / len(queries)

    return covered(fake, real, radii(real)), covered(real, fake, radii(fake))


@pytest.mark.parametrize("seed,shift", [(0, 0.0), (1, 0.7), (2, 2.5)])
def test_precision_recall_equals_brute_force(seed, shift):
    rng = np.random.default_rng(seed)
    real = rng.standard_normal((60, 5))
    fake = rng.standard_normal((45, 5)) * 1.3 + shift
    expected = pr_brute_force(real, fake, 3)
    got = precision_recall(real, fake, k=3, block=7, device="cpu")
    assert got == pytest.approx(expected, abs=1e-12)
    if shift == 2.5:
        assert got[0] < 0.5  # far-off fakes: low precision


def test_precision_recall_identical_sets_and_k():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((40, 4))
    assert precision_recall(x, x.copy(), k=3, device="cpu") == (1.0, 1.0)
    real, fake = rng.standard_normal((30, 3)), rng.standard_normal((30, 3)) + 1.0
    assert precision_recall(real, fake, k=1, device="cpu") == pytest.approx(pr_brute_force(real, fake, 1))
    assert precision_recall(torch.from_numpy(real).float(), fake, k=1, device="cpu") == pytest.approx(
        pr_brute_force(real, fake, 1), abs=1 / 30 + 1e-9)


@pytest.fixture(scope="module")
def weights_home(tmp_path_factory):
    from diffunlearn.metrics.inception import WEIGHTS_FILENAME
    from diffunlearn.metrics.testing import write_random_fid_weights

    root = tmp_path_factory.mktemp("is")
    write_random_fid_weights(root / "torch" / "hub" / "checkpoints" / WEIGHTS_FILENAME, seed=0)
    mp = pytest.MonkeyPatch()
    mp.setenv("TORCH_HOME", str(root / "torch"))
    yield root
    mp.undo()


def test_cli_is_on_samples_npz_equals_api(weights_home, capsys):
    from diffunlearn.cli import main
    from diffunlearn.metrics.inception import load_inception

    rng = np.random.default_rng(0)
    images = (rng.random((20, 16, 16, 3)) ** rng.uniform(0.3, 3, (20, 1, 1, 3)) * 255).astype(np.uint8)
    path = weights_home / "samples.npz"
    np.savez(path, images=images)
    assert main(["is", str(path), "--splits", "2", "--batch-size", "8"]) == 0
    lines = dict(ln.split(": ") for ln in capsys.readouterr().out.strip().splitlines())
    _, logits = load_inception(None, "cpu").features_and_logits(images)
    mean, std = is_by_definition(logits[np.random.RandomState(2020).permutation(20)], 2)
    assert float(lines["inception_score_mean"]) == pytest.approx(mean, rel=1e-4)
    assert float(lines["inception_score_std"]) == pytest.approx(std, rel=1e-3, abs=1e-6)
    assert mean > 1.0 + 1e-6


def test_is_cli_json_record(monkeypatch, capsys, tmp_path):
    """The --json record names the count, splits and the extractor's weights (extractor stubbed)."""
    import json

    from diffunlearn.cli import main
    from diffunlearn.metrics import inception

    class Stub:
        name, weights_path, weights_sha256 = "inception-v3-fid", "w.pth", "ab" * 32

        def iter_features_and_logits(self, images, batch_size):
            for batch in images:
                n = len(batch)
                yield np.zeros((n, 4)), np.arange(n * 3, dtype=float).reshape(n, 3) % 5

        def describe(self):
            return {"feature_extractor": self.name, "weights_sha256": self.weights_sha256}

    monkeypatch.setattr(inception, "load_inception", lambda weights=None, device=None: Stub())
    np.savez(tmp_path / "s.npz", images=np.zeros((12, 4, 4, 3), np.uint8))
    assert main(["is", str(tmp_path / "s.npz"), "--splits", "3", "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    logits = np.arange(36, dtype=float).reshape(12, 3) % 5
    assert record["inception_score_mean"] == pytest.approx(inception_score(logits, 3)[0])
    assert record["num_samples"] == 12 and record["splits"] == 3 and record["weights_sha256"] == "ab" * 32
