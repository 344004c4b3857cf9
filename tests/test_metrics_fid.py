"""FID: equal to pytorch-fid on the same images and weights; streaming statistics; offline errors; CLI.

One randomly initialised FID-Inception weights file stands in for the real one (no network):
it is saved where torch.hub, and so pytorch-fid, looks for ``pt_inception-2015-12-05-6726825d.pth``.
"""
from __future__ import annotations

import contextlib
import io
import json
import warnings
from contextlib import redirect_stdout
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("pytorch_fid")

from PIL import Image  # noqa: E402

from diffunlearn.cli import main as cli_main  # noqa: E402
from diffunlearn.metrics.fid import (  # noqa: E402
    RunningStats,
    frechet_distance,
    load_stats,
    save_stats,
    stats_of_features,
)
from diffunlearn.metrics.inception import FID_WEIGHTS_URL, WEIGHTS_FILENAME, load_inception  # noqa: E402
from diffunlearn.metrics.testing import write_random_fid_weights  # noqa: E402

N_IMAGES = 16
SIZE = 32


def structured_images(n: int, seed: int, hue: float) -> np.ndarray:
    """uint8 NHWC images: random gradients and blobs, tinted by ``hue`` so two sets differ."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE] / SIZE
    out = np.empty((n, SIZE, SIZE, 3), dtype=np.uint8)
    for i in range(n):
        a, b, c = rng.uniform(-1, 1, 3)
        cy, cx, r = rng.uniform(0.2, 0.8), rng.uniform(0.2, 0.8), rng.uniform(0.1, 0.3)
        base = 0.5 + 0.3 * (a * xx + b * yy) + 0.4 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / r**2) * c
        rgb = np.stack([base, base * (1 - hue) + hue * xx, base * (1 - hue) + hue * (1 - yy)], -1)
        rgb += rng.normal(0, 0.05, rgb.shape)
        out[i] = np.clip(rgb * 255, 0, 255).astype(np.uint8)
    return out


def write_pngs(folder: Path, images: np.ndarray) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, im in enumerate(images):
        Image.fromarray(im).save(folder / f"{i:04d}.png")
    return folder


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """TORCH_HOME with random weights in the hub cache, two PNG folders and their arrays."""
    root = tmp_path_factory.mktemp("fid")
    mp = pytest.MonkeyPatch()
    mp.setenv("TORCH_HOME", str(root / "torch"))
    weights = write_random_fid_weights(root / "torch" / "hub" / "checkpoints" / WEIGHTS_FILENAME, seed=0)
    a = structured_images(N_IMAGES, seed=1, hue=0.0)
    b = structured_images(N_IMAGES, seed=2, hue=0.6)
    yield {
        "root": root, "weights": weights, "a": a, "b": b,
        "dir_a": write_pngs(root / "a", a), "dir_b": write_pngs(root / "b", b),
    }
    mp.undo()


@pytest.fixture(scope="module")
def extractor(env):
    return load_inception(None, "cpu")


@pytest.fixture(scope="module")
def pytorch_fid_value(env):
    from pytorch_fid.fid_score import calculate_fid_given_paths

    # one BLAS thread: scipy's sqrtm is far slower with two on a shared machine; the value is the same
    with redirect_stdout(io.StringIO()), warnings.catch_warnings(), single_blas_thread():
        warnings.simplefilter("ignore")
        return float(calculate_fid_given_paths([str(env["dir_a"]), str(env["dir_b"])], 50, "cpu", 2048, 0))


def single_blas_thread():
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(1, user_api="blas")


def rel(a: float, b: float) -> float:
    return abs(a - b) / abs(b)


def test_fid_from_uint8_arrays_equals_pytorch_fid_on_png_folders(env, extractor, pytorch_fid_value):
    """Our in-memory uint8 path against pytorch-fid reading the same images from PNG files."""
    from diffunlearn.metrics.extract import extract

    a, b = (extract(extractor, env[k], batch_size=10) for k in ("a", "b"))
    ours = frechet_distance(a.mu, a.sigma, b.mu, b.sigma)
    assert np.isfinite(pytorch_fid_value) and pytorch_fid_value > 1e-2  # not degenerate
    assert rel(ours, pytorch_fid_value) < 1e-4
    assert a.count == N_IMAGES


def test_features_and_logits_equal_pytorch_fid_network(env, extractor):
    from pytorch_fid.inception import InceptionV3

    ref = InceptionV3([3]).eval()  # loads the same file from the hub cache
    images = env["a"][:4]
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        ref_feats = ref(x)[0].flatten(1).double().numpy()
    feats, logits = extractor.features_and_logits(images, batch_size=3)
    assert feats.shape == (4, 2048) and logits.shape == (4, 1008)
    assert feats.dtype == np.float64
    np.testing.assert_allclose(feats, ref_feats, rtol=1e-4, atol=1e-5 * np.abs(ref_feats).max())
    fc = torch.load(env["weights"], weights_only=True)["fc.weight"].double().numpy()
    np.testing.assert_allclose(logits, ref_feats @ fc.T, rtol=1e-3, atol=1e-4 * np.abs(logits).max())
    assert np.abs(logits).max() > 1e-3


def test_cpu_micro_batches_keep_order_values_and_thread_count(env, extractor):
    """A batch larger than the CPU micro-batch, cut across threads, gives each image its own features, in
    order, and leaves the process's intra-op thread count as it was."""
    from diffunlearn.metrics.inception import CPU_MICRO_BATCH

    images = np.concatenate([env["a"], env["b"]])[: CPU_MICRO_BATCH + 5]
    threads = torch.get_num_threads()
    batched, batched_logits = extractor.features_and_logits(images, batch_size=len(images))
    assert torch.get_num_threads() == threads
    one_by_one = np.concatenate([extractor.features_and_logits(im[None], batch_size=1)[0] for im in images])
    assert batched.shape == (len(images), 2048) and batched_logits.shape == (len(images), 1008)
    np.testing.assert_allclose(batched, one_by_one, rtol=1e-5, atol=1e-6 * np.abs(one_by_one).max())
    assert not np.allclose(batched[0], batched[1])  # distinct images, distinct rows


def test_grayscale_and_tensor_inputs(extractor, env):
    gray = env["a"][:2, :, :, :1]
    f_gray, _ = extractor.features_and_logits(gray)
    f_rgb, _ = extractor.features_and_logits(np.repeat(gray, 3, axis=-1))
    np.testing.assert_allclose(f_gray, f_rgb, rtol=1e-6, atol=1e-7)
    nchw_uint8 = torch.from_numpy(env["a"][:2]).permute(0, 3, 1, 2)
    f_t, _ = extractor.features_and_logits(nchw_uint8)
    f_float, _ = extractor.features_and_logits(nchw_uint8.float() / 255)
    f_np, _ = extractor.features_and_logits(env["a"][:2])
    np.testing.assert_allclose(f_t, f_np, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(f_float, f_np, rtol=1e-6, atol=1e-7)


def test_weights_sha256_recorded(env, extractor):
    import hashlib

    assert extractor.name == "inception-v3-fid"
    assert Path(extractor.weights_path) == env["weights"]
    assert extractor.weights_sha256 == hashlib.sha256(env["weights"].read_bytes()).hexdigest()
    assert extractor.describe()["weights_sha256"] == extractor.weights_sha256


def test_running_stats_equal_stacked_np_cov():
    rng = np.random.default_rng(0)
    a = rng.gamma(2.0, 1.0, (700, 256)) + 3.0  # offset mean: the naive E[xx^T] - mu mu^T would lose digits
    b = rng.gamma(2.5, 0.8, (500, 256)) + 3.0
    streamed = []
    for feats, sizes in ((a, [1, 99, 300, 300]), (b, [250, 250])):
        rs = RunningStats(256)
        for chunk in np.split(feats, np.cumsum(sizes)[:-1]):
            rs.update(torch.from_numpy(chunk) if len(chunk) == 250 else chunk)
        assert rs.count == len(feats)
        np.testing.assert_allclose(rs.mean(), feats.mean(0), rtol=1e-12)
        np.testing.assert_allclose(rs.cov(), np.cov(feats, rowvar=False), rtol=1e-9, atol=1e-12)
        streamed.append(rs.stats())
    stacked = [stats_of_features(a), stats_of_features(b)]
    fid_streamed = frechet_distance(*streamed[0], *streamed[1])
    fid_stacked = frechet_distance(*stacked[0], *stacked[1])
    assert fid_stacked > 1.0
    assert rel(fid_streamed, fid_stacked) < 1e-8


@pytest.mark.parametrize("n,dim,dead", [(10, 64, 0), (40, 256, 3), (300, 128, 0)])
def test_frechet_distance_equals_pytorch_fid(n, dim, dead):
    """Rank-deficient (n < dim), with zero-variance features, and full-rank covariances."""
    from pytorch_fid.fid_score import calculate_frechet_distance

    rng = np.random.default_rng(n)
    x = np.abs(rng.standard_normal((n, dim))) * rng.uniform(0.1, 2, dim)
    y = np.abs(rng.standard_normal((n, dim)) + 0.3)
    x[:, :dead] = 0.5
    y[:, dim - dead :] = 0.0
    s1, s2 = stats_of_features(x), stats_of_features(y)
    with redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = calculate_frechet_distance(*s1, *s2)
        exact = frechet_distance(*s1, *s2, method="sqrtm")
    assert rel(frechet_distance(*s1, *s2), expected) < 1e-6
    assert rel(exact, expected) < 1e-12


def test_frechet_distance_sqrtm_adds_eps_when_not_finite():
    """pytorch-fid's fallback: a product whose sqrtm is not finite gets eps*I on both covariances."""
    from pytorch_fid.fid_score import calculate_frechet_distance

    s1 = np.array([[0.0, 1.0], [0.0, 0.0]])  # nilpotent: no square root, scipy returns inf
    s2 = np.eye(2)
    mu = np.zeros(2)
    with redirect_stdout(io.StringIO()) as out, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = calculate_frechet_distance(mu, s1, mu, s2)
    assert "singular product" in out.getvalue()
    with pytest.warns(RuntimeWarning, match="singular product"):
        ours = frechet_distance(mu, s1, mu, s2, method="sqrtm")
    assert rel(ours, expected) < 1e-12


def test_frechet_distance_eig_adds_eps_when_not_finite(monkeypatch):
    from diffunlearn.metrics import fid as fid_mod

    seen = []
    real = fid_mod.trace_sqrt_product

    def flaky(s1, s2):
        seen.append(s1[0, 0])
        return (float("nan"), 0.0) if len(seen) == 1 else real(s1, s2)

    monkeypatch.setattr(fid_mod, "trace_sqrt_product", flaky)
    s = np.eye(3)
    with pytest.warns(RuntimeWarning, match="singular product"):
        value = frechet_distance(np.zeros(3), s, np.zeros(3), s, eps=1e-3)
    assert seen == [1.0, 1.0 + 1e-3]
    # tr(I) + tr(I) - 2 tr((1 + eps) I)
    assert value == pytest.approx(6 - 2 * 3 * (1 + 1e-3), abs=1e-12)


def test_frechet_distance_imaginary_component_raises():
    mu = np.zeros(2)
    with pytest.raises(ValueError, match="Imaginary component"):
        frechet_distance(mu, np.diag([1.0, -1.0]), mu, np.eye(2))
    with pytest.raises(ValueError, match="Imaginary component"):
        frechet_distance(mu, np.diag([1.0, -1.0]), mu, np.eye(2), method="sqrtm")


def test_stats_file_round_trip_and_pytorch_fid_reads_it(tmp_path):
    from pytorch_fid.fid_score import compute_statistics_of_path

    rng = np.random.default_rng(3)
    mu, sigma = rng.standard_normal(8), np.cov(rng.standard_normal((20, 8)), rowvar=False)
    path = save_stats(tmp_path / "sub" / "ref.npz", mu, sigma, num_samples=20)
    m2, s2 = load_stats(path)
    np.testing.assert_array_equal(m2, mu)
    np.testing.assert_array_equal(s2, sigma)
    m3, s3 = compute_statistics_of_path(str(path), None, 50, 8, "cpu")
    np.testing.assert_array_equal(m3, mu)
    np.testing.assert_array_equal(s3, sigma)


def test_offline_without_weights_names_file_url_and_path(tmp_path, monkeypatch):
    from diffunlearn.metrics import inception as inc

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))

    def offline(url, dest, timeout=30.0):
        raise OSError("network is unreachable")

    monkeypatch.setattr(inc, "_download", offline)
    with pytest.raises(FileNotFoundError) as err:
        load_inception(None, "cpu")
    msg = str(err.value)
    assert "\n" not in msg
    assert WEIGHTS_FILENAME in msg and FID_WEIGHTS_URL in msg
    assert str(tmp_path / "empty" / "hub" / "checkpoints" / WEIGHTS_FILENAME) in msg
    assert "metrics.inception_weights" in msg
    with pytest.raises(FileNotFoundError, match="nowhere.pth"):
        load_inception(tmp_path / "nowhere.pth", "cpu")


def test_module_imports_do_not_import_torch():
    import subprocess
    import sys

    code = ("import sys, diffunlearn.cli, diffunlearn.metrics.fid_cli, diffunlearn.metrics.is_cli, "
            "diffunlearn.metrics.fid; assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def run_cli(argv, capsys) -> tuple[int, str, str]:
    code = cli_main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


def parse_fid(stdout: str) -> float:
    line = [ln for ln in stdout.splitlines() if ln.startswith("FID:")][-1]
    return float(line.split()[-1])


def test_cli_fid_folder_vs_folder_equals_pytorch_fid(env, capsys, pytorch_fid_value):
    code, out, _ = run_cli(["fid", str(env["dir_a"]), str(env["dir_b"]), "--device", "cpu", "--batch-size", "10"], capsys)
    assert code == 0
    assert rel(parse_fid(out), pytorch_fid_value) < 1e-4


def test_cli_fid_samples_npz_vs_saved_stats(env, capsys, pytorch_fid_value):
    root = env["root"]
    np.savez(root / "a_samples.npz", images=env["a"])
    np.savez(root / "b_samples.npz", images=env["b"])
    stats_b = root / "b_stats.npz"
    code, out, _ = run_cli(["fid", "--save-stats", str(root / "b_samples.npz"), str(stats_b)], capsys)
    assert code == 0 and stats_b.is_file()
    with np.load(stats_b) as f:
        assert int(f["num_samples"]) == N_IMAGES and len(str(f["weights_sha256"])) == 64

    code, out, _ = run_cli(["fid", str(root / "a_samples.npz"), str(stats_b), "--json"], capsys)
    assert code == 0
    record = json.loads(out)
    assert rel(record["fid"], pytorch_fid_value) < 1e-4
    assert record["num_samples"] == [N_IMAGES, None] and record["feature_extractor"] == "inception-v3-fid"

    code, _, err = run_cli(["fid", "--save-stats", str(root / "a_samples.npz"), str(stats_b)], capsys)
    assert code == 2 and "Existing output file" in err


def test_cli_fid_recursive_folder_and_explicit_weights(env, tmp_path, capsys):
    """A nested folder (png + grayscale JPG) against the same images as an .npz: same statistics."""
    nested = tmp_path / "nested"
    write_pngs(nested / "x", env["a"][:3])
    write_pngs(nested / "y" / "z", env["a"][3:5])
    Image.fromarray(env["b"][0]).convert("L").save(nested / "gray.JPG")
    gray = np.asarray(Image.open(nested / "gray.JPG").convert("RGB"))
    np.savez(tmp_path / "flat.npz", images=np.concatenate([env["a"][:5], gray[None]]))
    weights = tmp_path / "my_weights.pth"
    weights.write_bytes(env["weights"].read_bytes())
    argv = ["fid", str(nested), str(tmp_path / "flat.npz"), "--inception-weights", str(weights), "--json"]
    code, out, _ = run_cli(argv, capsys)
    assert code == 0
    record = json.loads(out)
    assert record["num_samples"] == [6, 6] and record["weights_path"] == str(weights)
    assert abs(record["fid"]) < 1e-3  # identical sets: zero up to rounding in the null space


def test_cli_fid_missing_weights_is_one_line_error(tmp_path, capsys, env):
    code, _, err = run_cli(["fid", str(env["dir_a"]), str(env["dir_b"]), "--inception-weights",
                            str(tmp_path / "missing.pth")], capsys)
    assert code == 2
    assert err.count("\n") == 1 and "missing.pth" in err and FID_WEIGHTS_URL in err
