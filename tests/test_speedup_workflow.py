"""train.timesteps / train.loss_weighting as job params: the default re-plans nothing, a scheme re-plans the trainings."""
import copy

import pytest

from conftest import planned_jobs, write_config

pytestmark = pytest.mark.slow


def _replan(tiny_run, tmp_path, mutate):
    work, cfg = tiny_run
    cfg = copy.deepcopy(cfg)
    mutate(cfg)
    return planned_jobs(work, write_config(tmp_path / "changed.yaml", cfg))


def test_uniform_schemes_written_out_replan_nothing(tiny_run, tmp_path):
    def uniform(c):
        c["train"].update(timesteps={"scheme": "uniform"}, loss_weighting={"scheme": "uniform"})

    assert _replan(tiny_run, tmp_path, uniform) == {}


@pytest.mark.parametrize("key,scheme", [("loss_weighting", {"scheme": "p2", "gamma": 0.5}),
                                        ("timesteps", {"scheme": "speed"})])
def test_a_scheme_replans_the_trainings_and_their_dependants(tiny_run, tmp_path, key, scheme):
    jobs = _replan(tiny_run, tmp_path, lambda c: c["train"].update({key: scheme}))
    assert jobs["train_original"] == 1 and jobs["train_oracle"] == 2
    assert jobs["unlearn"] == 3  # ga, gd, sparsified fine-tune with the same train config
    assert jobs["sample"] == 3 * 2 + 3 and jobs["evaluate"] == 3 * 2 + 3
    assert not {"prepare_data", "make_forget_sets", "train_classifier", "reference_stats"} & set(jobs)


def test_a_schemes_default_parameter_written_out_replans_nothing_more(tiny_run, tmp_path):
    """{scheme: p2} and {scheme: p2, k: 1.0, gamma: 1.0} are the same job params."""
    work, cfg = tiny_run
    a, b = copy.deepcopy(cfg), copy.deepcopy(cfg)
    a["train"]["loss_weighting"] = {"scheme": "p2"}
    b["train"]["loss_weighting"] = {"scheme": "p2", "k": 1.0, "gamma": 1.0}
    assert planned_jobs(work, write_config(tmp_path / "a.yaml", a)) == planned_jobs(work, write_config(tmp_path / "b.yaml", b))


def test_a_bad_scheme_parameter_fails_before_planning(tiny_run, tmp_path):
    from conftest import run_snakemake

    work, cfg = tiny_run
    cfg = copy.deepcopy(cfg)
    cfg["train"]["loss_weighting"] = {"scheme": "p2", "lam": 0.7}
    proc = run_snakemake(work, write_config(tmp_path / "bad.yaml", cfg), "-n", check=False)
    assert proc.returncode != 0
    assert "train.loss_weighting.lam: not a parameter of scheme 'p2'" in proc.stdout + proc.stderr
