import json
import math

import numpy as np
import pytest

from diffunlearn.cli import main
from diffunlearn.metrics.klom import (
    QUANTITIES,
    STATISTICS,
    klom_per_example,
    klom_with_floor,
    noise_floor,
    seed_halves,
    summarize_klom,
)


def reference_klom(u, o, bins=20, eps=1e-5, clip=100.0):
    """The KLOM of docs/design.md for one example, written out with np.histogram."""
    u = np.clip(np.asarray(u, dtype=np.float64), -clip, clip)
    o = np.clip(np.asarray(o, dtype=np.float64), -clip, clip)
    start = min(u.min(), o.min())
    end = max(u.max(), o.max())
    if start == end:
        end = start + 1
    edges = np.linspace(start, end, bins + 1)
    p = np.histogram(u, bins=edges)[0] / len(u)
    q = np.histogram(o, bins=edges)[0] / len(o)
    support = p > 0
    q = np.where(support, np.maximum(q, eps), q)
    q = q / q.sum()
    return float(np.sum(p[support] * np.log(p[support] / q[support])))


def reference_loop(unlearned, oracle, **kwargs):
    return np.array([reference_klom(unlearned[:, i], oracle[:, i], **kwargs) for i in range(unlearned.shape[1])])


def tricky_margins(rng, n_unlearned=37, n_oracle=23):
    """Columns that exercise the binning: ties, values on and one ulp off the edges, constants, clipping."""
    columns_u, columns_o = [], []

    def add(u, o):
        columns_u.append(np.asarray(u, dtype=np.float64))
        columns_o.append(np.asarray(o, dtype=np.float64))

    for _ in range(60):  # continuous, shifted and scaled
        add(rng.normal(size=n_unlearned), rng.normal(0.3, 1.5, size=n_oracle))
    for _ in range(40):  # heavy ties
        add(np.round(rng.normal(size=n_unlearned), 1), np.round(rng.normal(size=n_oracle), 1))
    for _ in range(40):  # values on the edges and one ulp either side; both extremes present
        low, high = sorted(rng.normal(size=2) * 3)
        edges = np.linspace(low, high, 21)
        near = np.concatenate([edges, np.nextafter(edges, -np.inf), np.nextafter(edges, np.inf)])
        near = near[(near >= low) & (near <= high)]
        u, o = rng.choice(near, n_unlearned), rng.choice(near, n_oracle)
        u[0], o[0] = low, high
        add(u, o)
    for value in (0.0, -3.25, 100.0, 1e-300):  # constant columns, and all-equal u and o
        add(np.full(n_unlearned, value), np.full(n_oracle, value))
    add(np.full(n_unlearned, 2.0), rng.normal(size=n_oracle))  # constant u only
    for _ in range(10):  # beyond the clip, and infinities
        u, o = rng.normal(0, 150, size=n_unlearned), rng.normal(0, 150, size=n_oracle)
        u[1], o[2] = np.inf, -np.inf
        add(u, o)
    for _ in range(10):  # spreads of a few ulps (bins narrower than an ulp)
        add(50.0 + np.spacing(50.0) * rng.integers(0, 4, n_unlearned), 50.0 + np.spacing(50.0) * rng.integers(0, 4, n_oracle))
    for _ in range(10):  # tiny spreads near zero
        add(rng.normal(size=n_unlearned) * 1e-310, rng.normal(size=n_oracle) * 1e-310)
    for _ in range(5):  # a spread of a few denormals: np.linspace's step underflows to zero
        smallest = np.nextafter(0.0, 1.0)
        add(smallest * rng.integers(0, 3, n_unlearned), smallest * rng.integers(0, 3, n_oracle))
    return np.stack(columns_u, axis=1), np.stack(columns_o, axis=1)


BACKENDS = pytest.mark.parametrize("backend", ["numba", "numpy"])


@pytest.mark.parametrize("examples_per_chunk", [1, 7, 64, 1024])
@BACKENDS
def test_klom_per_example_matches_per_example_histograms(examples_per_chunk, backend):
    rng = np.random.default_rng(0)
    unlearned, oracle = tricky_margins(rng)
    got = klom_per_example(unlearned, oracle, examples_per_chunk=examples_per_chunk, backend=backend)
    expected = reference_loop(unlearned, oracle)
    assert got.dtype == np.float64
    assert got.shape == (unlearned.shape[1],)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-9)


@pytest.mark.parametrize("bins, eps, clip", [(1, 1e-5, 100.0), (7, 1e-3, 100.0), (20, 1e-5, 1.0), (50, 1e-8, 100.0)])
@BACKENDS
def test_klom_per_example_other_settings(bins, eps, clip, backend):
    rng = np.random.default_rng(1)
    unlearned, oracle = tricky_margins(rng, n_unlearned=12, n_oracle=40)
    got = klom_per_example(unlearned, oracle, bins=bins, eps=eps, clip=clip, backend=backend)
    expected = reference_loop(unlearned, oracle, bins=bins, eps=eps, clip=clip)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-9)


@BACKENDS
def test_klom_per_example_large_random_input_and_float32(backend):
    rng = np.random.default_rng(2)
    unlearned = rng.normal(-0.05, 0.01, size=(50, 3000))
    oracle = rng.normal(-0.05, 0.012, size=(40, 3000))
    np.testing.assert_allclose(klom_per_example(unlearned, oracle, backend=backend), reference_loop(unlearned, oracle), rtol=0, atol=1e-9)
    unlearned32, oracle32 = unlearned.astype(np.float32), oracle.astype(np.float32)
    got = klom_per_example(unlearned32, oracle32, backend=backend)
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, reference_loop(unlearned32.astype(np.float64), oracle32.astype(np.float64)), atol=1e-9)


@BACKENDS
def test_klom_hand_computed_values(backend):
    # Range [0, 1]: 0 falls in the first bin, 1 (the maximum) in the last one.
    unlearned = np.array([[0.0], [0.0], [1.0], [1.0]])
    oracle = np.array([[0.0], [0.0], [0.0], [1.0]])
    assert klom_per_example(unlearned, oracle, backend=backend)[0] == pytest.approx(0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25), abs=1e-12)
    # The oracle never reaches the last bin: q is floored at eps there, then renormalised.
    unlearned = np.array([[0.0], [1.0]])
    oracle = np.array([[0.0], [0.0]])
    eps = 1e-5
    z = 1 + eps
    expected = 0.5 * math.log(0.5 / (1 / z)) + 0.5 * math.log(0.5 / (eps / z))
    assert klom_per_example(unlearned, oracle, eps=eps, backend=backend)[0] == pytest.approx(expected, abs=1e-12)


@BACKENDS
def test_klom_of_identical_distributions_is_zero(backend):
    rng = np.random.default_rng(3)
    margins = np.round(rng.normal(size=(30, 500)), 2)
    np.testing.assert_allclose(klom_per_example(margins, margins, backend=backend), 0.0, atol=1e-12)
    shuffled_rows = margins[rng.permutation(30)]
    np.testing.assert_allclose(klom_per_example(margins, shuffled_rows, backend=backend), 0.0, atol=1e-12)
    assert np.all(klom_per_example(margins, margins + 1.0, backend=backend) > 0.1)


@BACKENDS
def test_klom_per_example_rejects_bad_input(backend):
    margins = np.zeros((3, 5))
    with pytest.raises(ValueError, match="same examples"):
        klom_per_example(margins, np.zeros((3, 6)), backend=backend)
    with pytest.raises(ValueError, match="2-D"):
        klom_per_example(np.zeros(5), margins, backend=backend)
    with pytest.raises(ValueError, match="no models"):
        klom_per_example(np.zeros((0, 5)), margins, backend=backend)
    with_nan = margins.copy()
    with_nan[1, 3] = np.nan
    with pytest.raises(ValueError, match="NaN.*example 3"):
        klom_per_example(margins, with_nan, backend=backend)
    with pytest.raises(ValueError, match="bins"):
        klom_per_example(margins, margins, bins=0, backend=backend)
    with pytest.raises(ValueError, match="backend"):
        klom_per_example(margins, margins, backend="cuda")


def test_summarize_klom_matches_numpy_percentiles():
    rng = np.random.default_rng(4)
    values = rng.exponential(size=1000)
    splits = {"forget": np.arange(100), "retain": np.arange(100, 900), "validation": np.arange(900, 1000), "empty": np.array([], dtype=int)}
    rows = summarize_klom(values, splits)
    assert [row["split"] for row in rows] == ["forget", "retain", "validation", "empty"]
    for row, indices in zip(rows[:3], list(splits.values())[:3]):
        assert row["n"] == len(indices)
        assert row["p95"] == np.percentile(values[indices], 95)
        assert row["p99"] == np.percentile(values[indices], 99)
        assert row["mean"] == pytest.approx(values[indices].mean(), rel=1e-15)
    assert rows[3]["n"] == 0 and math.isnan(rows[3]["p95"])
    with pytest.raises(ValueError, match="out of range"):
        summarize_klom(values, {"forget": np.array([1000])})


def test_noise_floor_splits_the_models_in_two_halves():
    rng = np.random.default_rng(5)
    models = rng.normal(size=(9, 200))
    order = np.random.default_rng(11).permutation(9)
    expected = klom_per_example(models[np.sort(order[:4])], models[np.sort(order[4:])])
    np.testing.assert_allclose(noise_floor(models, rng_seed=11), expected, rtol=0, atol=0)
    np.testing.assert_array_equal(noise_floor(models, rng_seed=11), noise_floor(models, rng_seed=11))
    assert not np.array_equal(noise_floor(models, rng_seed=11), noise_floor(models, rng_seed=12))


def test_noise_floor_of_identical_halves_is_zero():
    rng = np.random.default_rng(6)
    one_model = rng.normal(size=(1, 300))
    for n_models in (2, 5, 6):
        np.testing.assert_allclose(noise_floor(np.repeat(one_model, n_models, axis=0)), 0.0, atol=1e-12)


def test_noise_floor_needs_two_models():
    with pytest.raises(ValueError, match="at least 2 models"):
        noise_floor(np.zeros((1, 10)))


# ---------------------------------------------------------------- command line


@pytest.fixture
def margin_files(tmp_path):
    rng = np.random.default_rng(7)
    unlearned = rng.normal(size=(10, 300))
    unlearned[:, :30] += 2.0
    oracle = rng.normal(size=(10, 300))
    oracle2 = rng.normal(size=(8, 300))
    for name, array in (("unlearned", unlearned), ("oracle", oracle), ("oracle2", oracle2)):
        np.save(tmp_path / f"{name}.npy", array)
    return tmp_path, unlearned, oracle, oracle2


def table_rows(output: str) -> dict[tuple[str, str], list[str]]:
    lines = output.strip().splitlines()
    header_index = next(i for i, line in enumerate(lines) if line.split()[:1] == ["split"])
    assert lines[header_index].split() == ["split", "n", "quantity", "P95", "mean", "P99", "mean", "95%", "CI"]
    return {tuple(line.split()[0:3:2]): line.split()[1:2] + line.split()[3:] for line in lines[header_index + 1 :]}


def test_cli_json_with_floor_oracles_matches_the_library(margin_files, capsys):
    path, unlearned, oracle, oracle2 = margin_files
    splits = {"forget": list(range(0, 30)), "retain": list(range(30, 250)), "validation": list(range(250, 300))}
    (path / "splits.json").write_text(json.dumps(splits))
    args = ["klom", str(path / "unlearned.npy"), str(path / "oracle.npy"), "--floor-oracles", str(path / "oracle2.npy"),
            "--split-file", str(path / "splits.json"), "--bootstrap", "10", "--json"]
    assert main(args) == 0
    got = json.loads(capsys.readouterr().out)
    expected, _, _ = klom_with_floor(unlearned, oracle, {k: np.array(v) for k, v in splits.items()}, oracle2, bootstrap=10)
    assert list(got) == ["forget", "retain", "validation"]
    for name in splits:
        assert set(got[name]) == {"klom", "floor", "excess"}
        assert {"p95", "mean", "p99", "mean_ci95"} <= set(got[name]["excess"])
        for quantity in QUANTITIES:
            for key, value in got[name][quantity].items():
                assert value == pytest.approx(expected[name][quantity][key], abs=1e-12)
    assert got["forget"]["excess"]["mean"] > 1.0


def test_cli_table_uses_the_split_reference_without_floor_oracles(margin_files, capsys):
    path, unlearned, oracle, _ = margin_files
    np.savez(path / "splits.npz", forget=np.arange(30), retain=np.arange(30, 300))
    assert main(["klom", str(path / "unlearned.npy"), str(path / "oracle.npy"), "--split-file", str(path / "splits.npz"),
                 "--bootstrap", "5", "--num-splits", "3"]) == 0
    output = capsys.readouterr().out
    rows = table_rows(output)
    splits = {"forget": np.arange(30), "retain": np.arange(30, 300)}
    expected, _, _ = klom_with_floor(unlearned, oracle, splits, num_splits=3, bootstrap=5)
    assert list(rows) == [(s, q) for s in splits for q in QUANTITIES]
    for (name, quantity), cells in rows.items():
        values = expected[name][quantity]
        low, high = values["mean_ci95"]
        assert cells == [str(len(splits[name])), f"{values['p95']:.4f}", f"{values['mean']:.4f}", f"{values['p99']:.4f}",
                         f"[{low:.4f},", f"{high:.4f}]"]
    assert len({len(line) for line in output.strip().splitlines()[1:]}) == 1  # aligned columns
    assert "split reference" in output


def test_cli_errors_name_the_bad_input(margin_files, capsys):
    path, unlearned, _, _ = margin_files

    def error_of(*args):
        assert main(["klom", *map(str, args)]) == 2
        error = capsys.readouterr().err
        assert error.startswith("error: ") and len(error.strip().splitlines()) == 1
        return error

    np.save(path / "other.npy", np.zeros((10, 299)))
    error = error_of(path / "unlearned.npy", path / "other.npy")
    assert "other.npy" in error and "299" in error and "300" in error
    error = error_of(path / "unlearned.npy", path / "oracle.npy", "--floor-oracles", path / "other.npy")
    assert "other.npy" in error and "299" in error
    with_nan = unlearned.copy()
    with_nan[3, 17] = np.nan
    np.save(path / "nan.npy", with_nan)
    error = error_of(path / "nan.npy", path / "oracle.npy")
    assert "nan.npy" in error and "NaN" in error and "model 3, example 17" in error
    np.save(path / "three.npy", unlearned[:3])
    error = error_of(path / "unlearned.npy", path / "oracle.npy", "--floor-oracles", path / "three.npy")
    assert "three.npy: 3 models" in error and "4" in error
    np.save(path / "six.npy", unlearned[:6])
    error = error_of(path / "six.npy", path / "six.npy")
    assert "six.npy: 6 models" in error and "halves of 3" in error
    error = error_of(path / "six.npy", path / "oracle.npy")
    assert "six.npy" in error and "oracle.npy" in error and "seed index" in error
    (path / "bad.json").write_text(json.dumps({"forget": [0, 300]}))
    error = error_of(path / "unlearned.npy", path / "oracle.npy", "--split-file", path / "bad.json")
    assert "bad.json" in error and "forget" in error and "300" in error and "out of range" in error
    assert "missing.npy" in error_of(path / "missing.npy", path / "oracle.npy")
    (path / "not_an_array.npy").write_text("hello")
    assert "not_an_array.npy" in error_of(path / "not_an_array.npy", path / "oracle.npy")


@BACKENDS
def test_threaded_ranges_equal_the_serial_result_and_name_the_global_example(backend):
    rng = np.random.default_rng(7)
    unlearned = rng.normal(size=(9, 5003)).round(1)  # ties
    oracle = rng.normal(size=(6, 5003)) * 3
    serial = klom_per_example(unlearned, oracle, threads=1, backend=backend)
    threaded = klom_per_example(unlearned, oracle, threads=3, backend=backend)
    assert np.array_equal(serial, threaded)
    unlearned[0, 4000] = np.nan
    with pytest.raises(ValueError, match="example 4000"):
        klom_per_example(unlearned, oracle, threads=3, backend=backend)


# ---------------------------------------------------------------- floor at the same N, excess and intervals


SPLITS = {"forget": np.arange(0, 100), "retain": np.arange(100, 400), "validation": np.arange(400, 500)}


def synthetic_sides(seed, shift_forget=0.0, n_models=32, n_examples=500):
    """Two sets of models whose margins share their per-example distribution (example means differ);
    ``shift_forget`` moves the unlearned side's forget examples by that many standard deviations."""
    rng = np.random.default_rng(seed)
    centres, scales = rng.normal(-0.05, 0.02, n_examples), rng.uniform(0.005, 0.02, n_examples)
    unlearned = centres + scales * rng.normal(size=(n_models, n_examples))
    oracle = centres + scales * rng.normal(size=(n_models, n_examples))
    floor_oracles = centres + scales * rng.normal(size=(n_models, n_examples))
    forget = SPLITS["forget"][SPLITS["forget"] < n_examples]
    unlearned[:, forget] += shift_forget * scales[forget]
    return unlearned, oracle, floor_oracles


@pytest.mark.parametrize("reference", ["split", "extra"])
def test_same_distribution_gives_no_excess(reference):
    unlearned, oracle, floor_oracles = synthetic_sides(20)
    summary, _, _ = klom_with_floor(unlearned, oracle, SPLITS, floor_oracles if reference == "extra" else None, bootstrap=20)
    for name in SPLITS:
        assert abs(summary[name]["excess"]["mean"]) <= 0.3, (name, summary[name]["excess"])
        assert summary[name]["klom"]["mean"] > 1.0  # the plug-in bias the floor takes away


@pytest.mark.parametrize("reference", ["split", "extra"])
def test_shifted_forget_examples_give_an_excess_on_the_forget_split_only(reference):
    unlearned, oracle, floor_oracles = synthetic_sides(21, shift_forget=2.0)
    summary, _, _ = klom_with_floor(unlearned, oracle, SPLITS, floor_oracles if reference == "extra" else None, bootstrap=20)
    assert summary["forget"]["excess"]["mean"] >= 1.0
    assert summary["forget"]["excess"]["mean_ci95"][0] > 0
    for name in ("retain", "validation"):
        assert abs(summary[name]["excess"]["mean"]) <= 0.3, (name, summary[name]["excess"])


def test_split_reference_is_the_average_over_halvings_of_u_a_vs_o_b_beside_o_a_vs_o_b():
    unlearned, oracle, _ = synthetic_sides(22, shift_forget=1.0, n_models=10, n_examples=60)
    splits = {"all": np.arange(60)}
    _, klom, floor = klom_with_floor(unlearned, oracle, splits, num_splits=3, bootstrap=0, rng_seed=5)
    halves = seed_halves(10, 3, rng_seed=5)
    assert all(len(a) == 5 and len(b) == 5 and not set(a) & set(b) for a, b in halves)
    expected_klom = np.mean([reference_loop(unlearned[a], oracle[b]) for a, b in halves], axis=0)
    expected_floor = np.mean([reference_loop(oracle[a], oracle[b]) for a, b in halves], axis=0)
    np.testing.assert_allclose(klom, expected_klom, atol=1e-12)
    np.testing.assert_allclose(floor, expected_floor, atol=1e-12)


def test_extra_reference_and_direction():
    unlearned, oracle, floor_oracles = synthetic_sides(23, shift_forget=1.0, n_models=6, n_examples=40)
    splits = {"all": np.arange(40)}
    _, klom, floor = klom_with_floor(unlearned, oracle, splits, floor_oracles, bootstrap=0)
    np.testing.assert_allclose(klom, reference_loop(unlearned, oracle), atol=1e-12)
    np.testing.assert_allclose(floor, reference_loop(floor_oracles, oracle), atol=1e-12)
    _, klom, floor = klom_with_floor(unlearned, oracle, splits, floor_oracles, bootstrap=0, direction="oracle_unlearned")
    np.testing.assert_allclose(klom, reference_loop(oracle, unlearned), atol=1e-12)
    np.testing.assert_allclose(floor, reference_loop(oracle, floor_oracles), atol=1e-12)
    summary, klom, floor = klom_with_floor(unlearned, oracle, splits, floor_oracles, bootstrap=0)
    excess = klom - floor
    assert summary["all"]["excess"]["p95"] == np.percentile(excess, 95)
    assert summary["all"]["excess"]["mean"] == pytest.approx(excess.mean(), abs=1e-15)
    assert summary["all"]["floor"]["p99"] == np.percentile(floor, 99)
    with pytest.raises(ValueError, match="direction"):
        klom_with_floor(unlearned, oracle, splits, floor_oracles, bootstrap=0, direction="both")


@pytest.mark.parametrize("reference", ["split", "extra"])
@pytest.mark.parametrize("direction", ["unlearned_oracle", "oracle_unlearned"])
def test_numba_and_numpy_agree_on_every_new_quantity(reference, direction):
    unlearned, oracle, floor_oracles = synthetic_sides(24, shift_forget=1.5, n_models=12, n_examples=500)
    unlearned[:, :50] = np.round(unlearned[:, :50], 2)  # ties
    floor = floor_oracles if reference == "extra" else None
    results = [klom_with_floor(unlearned, oracle, SPLITS, floor, num_splits=3, bootstrap=10, direction=direction, backend=b)
               for b in ("numba", "numpy")]
    (summary_a, klom_a, floor_a), (summary_b, klom_b, floor_b) = results
    np.testing.assert_allclose(klom_a, klom_b, rtol=0, atol=1e-9)
    np.testing.assert_allclose(floor_a, floor_b, rtol=0, atol=1e-9)
    for name in SPLITS:
        for quantity in QUANTITIES:
            for stat in STATISTICS:
                assert summary_a[name][quantity][stat] == pytest.approx(summary_b[name][quantity][stat], abs=1e-9)
                np.testing.assert_allclose(summary_a[name][quantity][f"{stat}_ci95"], summary_b[name][quantity][f"{stat}_ci95"], rtol=0, atol=1e-9)


def test_bootstrap_is_seeded_and_brackets_the_estimate():
    unlearned, oracle, _ = synthetic_sides(25, shift_forget=1.0, n_models=8, n_examples=500)
    first, _, _ = klom_with_floor(unlearned, oracle, SPLITS, num_splits=2, bootstrap=30, rng_seed=3)
    again, _, _ = klom_with_floor(unlearned, oracle, SPLITS, num_splits=2, bootstrap=30, rng_seed=3)
    assert first == again
    for name in SPLITS:
        for quantity in QUANTITIES:
            low, high = first[name][quantity]["mean_ci95"]
            assert low < high
            assert low <= first[name][quantity]["mean"] <= high


def test_klom_with_floor_rejects_too_few_models():
    unlearned, oracle, floor_oracles = synthetic_sides(26, n_models=6, n_examples=20)
    splits = {"all": np.arange(20)}
    with pytest.raises(ValueError, match="halves of 3.*4 models per side"):
        klom_with_floor(unlearned, oracle, splits, bootstrap=0)
    with pytest.raises(ValueError, match="floor oracles: 3 models"):
        klom_with_floor(unlearned, oracle, splits, floor_oracles[:3], bootstrap=0)
    with pytest.raises(ValueError, match="pairs models by seed index"):
        klom_with_floor(unlearned, oracle[:5], splits, bootstrap=0)
