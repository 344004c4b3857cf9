"""The DAG end to end on a tiny config, and what a change re-plans (dry-runs against a finished run)."""
import copy
import json

import numpy as np
import pandas as pd
import pytest

from conftest import planned_jobs, write_config

pytestmark = pytest.mark.slow


def _replan(tiny_run, tmp_path, mutate):
    work, cfg = tiny_run
    cfg = copy.deepcopy(cfg)
    mutate(cfg)
    return planned_jobs(work, write_config(tmp_path / "changed.yaml", cfg))


def test_run_writes_the_report_files(tiny_run):
    work, cfg = tiny_run
    report = work / "results" / "t" / "report"
    table = pd.read_csv(report / "evaluation_results.csv")
    # 1 original + 2 oracles with 2 checkpoints each, 3 unlearned models with 1 checkpoint each
    assert len(table) == 3 * 2 + 3
    assert set(table["step"]) == {2, 4}
    assert table["fid_classifier"].notna().all() and (table["fid_classifier"] >= 0).all()
    assert (table["num_samples"] == 16).all()
    best = pd.read_csv(report / "best_scores.csv")
    assert set(best["criterion"]) == {"fid", "is"}
    assert {"original", "oracle.rand", "oracle.cls1"} <= set(best["family"])
    for name in ("fid_vs_step.png", "is_vs_step.png", "samples/original.png", "klom_per_method.png", "cost_vs_klom.png"):
        assert (report / name).stat().st_size > 1000, name
    metric = json.loads((work / "results" / "t" / "metrics" / "classifier" / "original.s0" / "step4.json").read_text())
    assert metric["feature_extractor"] == "classifier" and len(metric["weights_sha256"]) == 64
    assert metric["num_samples"] == 16
    # the training record reaches the metrics through samples.npz (evaluate does not read the checkpoint)
    state = json.loads((work / "results" / "t" / "models" / "original.s0" / "checkpoint-4" / "training_state"
                        / "state.json").read_text())
    assert metric["train_wall_seconds"] == pytest.approx(state["wall_seconds"]) and state["wall_seconds"] > 0
    assert metric["train_device"] == state["device"] == "cpu"
    samples = np.load(work / "results" / "t" / "samples" / "original.s0" / "step4" / "samples.npz")["images"]
    assert samples.shape == (16, 8, 8, 1) and samples.dtype == np.uint8
    klom = pd.read_csv(report / "klom.csv")
    assert set(klom["method"]) == {"do_nothing", "ga", "gd", "sparsified"}
    assert set(klom["split"]) == {"forget", "retain", "validation"}
    assert {"klom_p95", "floor_mean", "excess_mean", "excess_mean_low", "excess_mean_high", "n_oracle"} <= set(klom.columns)
    assert klom["excess_mean"].isna().all()  # 1 seed: too few models to read KLOM (a warning in the job's log)
    log = (work / "results" / "t" / "logs" / "klom" / "gd.rand.log").read_text()
    assert "warning:" in log and "KLOM, floor and excess are NaN" in log


def test_second_run_plans_nothing(tiny_run):
    work, cfg = tiny_run
    assert planned_jobs(work, write_config(work / "again.yaml", cfg)) == {}


def test_num_samples_replans_only_sampling_evaluation_and_report(tiny_run, tmp_path):
    jobs = _replan(tiny_run, tmp_path, lambda c: c["sampling"].update(num_samples=12))
    assert set(jobs) == {"sample", "evaluate", "report", "all"}
    assert jobs["sample"] == jobs["evaluate"] == 3 * 2 + 3


def test_forget_set_size_replans_only_that_forget_sets_models(tiny_run, tmp_path):
    jobs = _replan(tiny_run, tmp_path, lambda c: c["forget_sets"][0].update(size=25))
    assert jobs["make_forget_sets"] == 1
    assert jobs["train_oracle"] == 1  # oracle.rand only; oracle.cls1 stays
    assert "train_original" not in jobs and "prune_fine_tune" not in jobs and "train_classifier" not in jobs
    assert jobs["unlearn"] == 3  # ga, gd, sparsified on rand
    assert jobs["sample"] == 2 + 3 and jobs["evaluate"] == 2 + 3
    assert jobs["margins"] == 1 + 3  # the new oracle and the unlearned models; not the original
    assert jobs["klom"] == 4


def test_one_methods_learning_rate_replans_only_that_method(tiny_run, tmp_path):
    jobs = _replan(tiny_run, tmp_path, lambda c: c["unlearning"]["ga"].update(lr=1e-3))
    assert jobs == {"unlearn": 1, "sample": 1, "evaluate": 1, "margins": 1, "klom": 1, "report": 1, "all": 1}


def test_speed_switches_replan_nothing_but_the_margins_seed_does(tiny_run, tmp_path):
    """compile / channels_last / fused AdamW / CUDA graphs do not change results beyond float tolerance: they
    are never job params, in any section."""
    def switch_all(c):
        c["margins"].update(compile=True, channels_last=True)
        c["train"].update(compile=True, channels_last=True, fused_adamw=False)
        c["sampling"].update(compile=True, channels_last=True, cuda_graphs=True)

    assert _replan(tiny_run, tmp_path, switch_all) == {}
    jobs = _replan(tiny_run, tmp_path, lambda c: c["margins"].update(seed=1))
    assert jobs["margins"] > 0 and "train_original" not in jobs


def test_training_change_does_not_replan_data_or_classifier(tiny_run, tmp_path):
    jobs = _replan(tiny_run, tmp_path, lambda c: c["train"].update(lr=5e-4))
    assert jobs["train_original"] == 1 and jobs["train_oracle"] == 2
    assert not {"prepare_data", "make_forget_sets", "train_classifier", "reference_stats"} & set(jobs)


def test_evaluate_seeds_limit_sampling_and_scoring_only(tmp_path):
    from conftest import tiny_config

    cfg = tiny_config(tmp_path / "results")
    cfg["seeds"] = [0, 1]
    every_seed = planned_jobs(tmp_path, write_config(tmp_path / "all.yaml", cfg))
    cfg["sampling"]["evaluate_seeds"] = [1]
    one_seed = planned_jobs(tmp_path, write_config(tmp_path / "one.yaml", cfg))
    assert every_seed["sample"] > 0 and every_seed["sample"] == 2 * one_seed["sample"]
    assert every_seed["evaluate"] == 2 * one_seed["evaluate"]
    for rule in ("train_original", "unlearn", "margins", "klom"):
        assert one_seed[rule] == every_seed[rule] > 0, rule
    # KLOM needs the oracles of the unlearning forget set for every seed; the other forget set's oracles
    # are only there to be scored, so seed 0's is no longer planned
    assert (every_seed["train_oracle"], one_seed["train_oracle"]) == (4, 3)
