"""train.timesteps / train.loss_weighting as job params (the default re-plans nothing, a scheme re-plans the trainings
and what depends on them), and the speed-up presets' plans (dry-runs)."""
import copy
import json
from pathlib import Path

import pytest

from conftest import ROOT, planned_jobs, run_snakemake, tiny_config, write_config


def _targets(results):
    r = Path(results) / "t" / "models"
    return [str(r / "original.s0" / "cost.json"), str(r / "oracle.rand.s0" / "cost.json"),
            str(r / "unlearn.gd.rand.s0" / "cost.2.json")]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The tiny config's original, one oracle and one fine-tuning unlearning run, trained once."""
    work = tmp_path_factory.mktemp("speedup_trained")
    cfg = tiny_config(work / "results")
    cfg["forget_sets"] = cfg["forget_sets"][:1]
    cfg["unlearning"]["methods"] = ["gd"]
    run_snakemake(work, write_config(work / "config.yaml", cfg), *_targets(work / "results"))
    return work, cfg


def _replan(trained, tmp_path, mutate):
    work, cfg = trained
    cfg = copy.deepcopy(cfg)
    mutate(cfg)
    return planned_jobs(work, write_config(tmp_path / "changed.yaml", cfg), *_targets(work / "results"))


@pytest.mark.slow
def test_uniform_schemes_written_out_replan_nothing(trained, tmp_path):
    def uniform(c):
        c["train"].update(timesteps={"scheme": "uniform"}, loss_weighting={"scheme": "uniform"})

    assert _replan(trained, tmp_path, lambda c: None) == {}
    assert _replan(trained, tmp_path, uniform) == {}


@pytest.mark.slow
@pytest.mark.parametrize("key,scheme", [("loss_weighting", {"scheme": "p2", "gamma": 0.5}),
                                        ("timesteps", {"scheme": "loss_decrease"})])
def test_a_scheme_replans_the_trainings_and_the_fine_tuning(trained, tmp_path, key, scheme):
    jobs = _replan(trained, tmp_path, lambda c: c["train"].update({key: scheme}))
    assert jobs == {"train_original": 1, "train_oracle": 1, "unlearn": 1}


@pytest.mark.slow
def test_a_schemes_default_parameters_written_out_are_the_same_params(trained, tmp_path):
    """{scheme: p2} and {scheme: p2, k: 1.0, gamma: 1.0} are the same job params: p2's run is not re-planned."""
    work, cfg = trained
    changed = copy.deepcopy(cfg)
    changed["train"]["loss_weighting"] = {"scheme": "p2"}
    run_snakemake(work, write_config(tmp_path / "p2.yaml", changed), *_targets(work / "results"))
    changed["train"]["loss_weighting"] = {"scheme": "p2", "k": 1.0, "gamma": 1.0}
    assert planned_jobs(work, write_config(tmp_path / "p2_full.yaml", changed), *_targets(work / "results")) == {}


def test_a_bad_scheme_parameter_fails_before_planning(tmp_path):
    cfg = tiny_config(tmp_path / "results")
    cfg["train"]["loss_weighting"] = {"scheme": "p2", "lam": 0.7}
    proc = run_snakemake(tmp_path, write_config(tmp_path / "bad.yaml", cfg), "-n", check=False)
    assert proc.returncode != 0
    assert "train.loss_weighting.lam: not a parameter of scheme 'p2'" in proc.stdout + proc.stderr


def test_the_study_plans_one_training_per_scheme_and_seed(tmp_path):
    cfg = tiny_config(tmp_path / "results", seeds=[0, 1])
    cfg["speedup"] = {"schemes": {"p2": {"loss_weighting": {"scheme": "p2"}}, "ours": {"timesteps": {"scheme": "loss_decrease"}}}}
    jobs = planned_jobs(tmp_path, write_config(tmp_path / "study.yaml", cfg))
    assert jobs["train_speedup"] == 2 * 2 and jobs["train_original"] == 2
    assert jobs["speedup"] == 1
    # every checkpoint (2) of the originals, oracles (2 forget sets), unlearned (3 methods, 1 checkpoint), speedup models
    assert jobs["sample"] == jobs["evaluate"] == 2 * (2 * (1 + 2) + 3) + 4 * 2


def test_a_schemes_batch_size_trains_at_that_batch_and_the_originals_keep_theirs(tmp_path):
    """speedup.schemes.<name>.batch_size (the ceiling rows: uniform at a larger batch) overrides train.batch_size for
    that scheme's trainings only."""
    cfg = tiny_config(tmp_path / "results")
    cfg["speedup"] = {"schemes": {"uniform_x2": {"batch_size": 32}}}
    models = tmp_path / "results" / "t" / "models"
    run_snakemake(tmp_path, write_config(tmp_path / "study.yaml", cfg),
                  str(models / "speedup.uniform_x2.s0" / "cost.json"), str(models / "original.s0" / "cost.json"))
    steps = cfg["train"]["steps"]
    ceiling = json.loads((models / "speedup.uniform_x2.s0" / "cost.json").read_text())
    original = json.loads((models / "original.s0" / "cost.json").read_text())
    assert ceiling["examples_seen"] == steps * 32
    assert original["examples_seen"] == steps * cfg["train"]["batch_size"] == steps * 16


def test_a_bad_scheme_batch_size_fails_before_planning(tmp_path):
    cfg = tiny_config(tmp_path / "results")
    cfg["speedup"] = {"schemes": {"uniform_x2": {"batch_size": 0}}}
    proc = run_snakemake(tmp_path, write_config(tmp_path / "bad.yaml", cfg), "-n", check=False)
    assert proc.returncode != 0
    assert "speedup.schemes.uniform_x2.batch_size" in proc.stdout + proc.stderr


@pytest.mark.parametrize("preset,steps,schemes", [("digits_speedup", 10, 12), ("cifar10_speedup", 10, 8)])
def test_speedup_presets_plan_every_scheme_seed_and_checkpoint(tmp_path, preset, steps, schemes):
    jobs = planned_jobs(tmp_path, ROOT / "config" / f"{preset}.yaml")
    seeds = 3
    assert jobs["train_original"] == seeds and jobs["train_speedup"] == schemes * seeds
    assert jobs["sample"] == jobs["evaluate"] == (schemes + 1) * seeds * steps
    assert jobs["speedup"] == jobs["report"] == 1
    assert not {"train_oracle", "unlearn", "margins", "klom"} & set(jobs)
