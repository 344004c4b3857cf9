"""The speed-up table (diffunlearn.speedup) on synthetic FID curves with known crossings."""
import numpy as np
import pandas as pd
import pytest

from diffunlearn.speedup import first_crossing, plot_fid_curves, speedup_table


def test_first_crossing_interpolates_between_the_bracketing_checkpoints():
    # 100 -> 40 between steps 200 and 300: 50 is reached 5/6 of the way
    assert first_crossing([100, 200, 300, 400], [150, 100, 40, 30], 50) == pytest.approx(200 + 100 * 50 / 60)
    assert first_crossing([100, 200], [20, 10], 50) == 100  # already there at the first checkpoint
    assert np.isnan(first_crossing([100, 200], [90, 60], 50))  # never
    assert first_crossing([1, 2, 3, 4], [9, 4, 8, 1], 5) == pytest.approx(1 + 4 / 5)  # the first crossing counts


def _records(family, steps, fid_per_seed, seconds_per_step):
    rows = []
    for seed, fids in enumerate(fid_per_seed):
        for step, fid in zip(steps, fids):
            rows.append({"family": family, "seed": seed, "step": step, "fid": fid,
                         "train_wall_seconds": seconds_per_step * step})
    return rows


def test_speedup_table_on_synthetic_curves():
    steps = [100, 200, 300, 400]
    base = _records("original", steps, [[80, 60, 45, 40], [80, 60, 55, 40]], 1.0)  # final mean 40
    fast = _records("speedup.fast", steps, [[50, 40, 30, 20], [70, 40, 30, 20]], 2.0)  # mean 60, 40: reaches 40 at 200
    slow = _records("speedup.slow", steps, [[90, 80, 70, 60], [90, 80, 70, 60]], 1.0)  # never
    t = speedup_table(pd.DataFrame(base + fast + slow), bootstrap=0).set_index("family")
    assert list(t.index) == ["original", "speedup.fast", "speedup.slow"]
    assert t.loc["original", "target_fid"] == 40
    assert t.loc["original", "steps_to_target"] == 400 and t.loc["original", "speedup_steps"] == 1
    assert t.loc["speedup.fast", "steps_to_target"] == pytest.approx(200)
    assert t.loc["speedup.fast", "seconds_to_target"] == pytest.approx(400)  # 2 s per step
    assert t.loc["speedup.fast", "speedup_steps"] == pytest.approx(2.0)
    assert t.loc["speedup.fast", "speedup_seconds"] == pytest.approx(1.0)
    assert t.loc["speedup.fast", "final_fid_mean"] == 20 and t.loc["speedup.fast", "final_fid_std"] == 0
    assert np.isnan(t.loc["speedup.slow", "steps_to_target"]) and t.loc["speedup.slow", "n_seeds"] == 2


def test_bootstrap_intervals_bracket_the_estimate_and_plots_are_written(tmp_path):
    steps = [100, 200, 300, 400]
    rng = np.random.default_rng(0)
    base = _records("original", steps, [np.array([80, 60, 45, 40]) + rng.normal(0, 2, 4) for _ in range(3)], 1.0)
    fast = _records("speedup.fast", steps, [np.array([50, 38, 30, 20]) + rng.normal(0, 2, 4) for _ in range(3)], 1.0)
    records = pd.DataFrame(base + fast)
    t = speedup_table(records, bootstrap=50).set_index("family")
    lo, hi = t.loc["speedup.fast", ["speedup_steps_lo", "speedup_steps_hi"]]
    assert lo <= t.loc["speedup.fast", "speedup_steps"] <= hi
    assert 0 < t.loc["speedup.fast", "reach_share"] <= 1
    for x in ("step", "seconds"):
        plot_fid_curves(records, x, tmp_path / f"{x}.png")
        assert (tmp_path / f"{x}.png").stat().st_size > 1000
