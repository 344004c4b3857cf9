"""The preference stage end to end on the tiny config (make_preferences -> train_dpo -> sample / evaluate -> dpo.csv),
what a change re-plans (dry-runs), the npo / dpo unlearning jobs, and the config errors."""
import copy
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import planned_jobs, run_snakemake, tiny_config, write_config


def _cfg(results):
    cfg = tiny_config(results)
    cfg["forget_sets"] = cfg["forget_sets"][:1]
    cfg["unlearning"] = {"methods": []}
    cfg["dpo"] = {"runs": [{"name": "d"}, {"name": "sft", "sft": True}], "beta": 5.0, "steps": 2, "batch_size": 4,
                  "num_pairs": 8, "choice_model": {"label": 3}}
    return cfg


def _target(results):
    return str(Path(results) / "t" / "report" / "dpo.csv")


@pytest.fixture(scope="module")
def dpo_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("dpo_run")
    cfg = _cfg(work / "results")
    run_snakemake(work, write_config(work / "config.yaml", cfg), _target(work / "results"))
    return work, cfg


def _replan(dpo_run, tmp_path, mutate):
    work, cfg = dpo_run
    cfg = copy.deepcopy(cfg)
    mutate(cfg)
    return planned_jobs(work, write_config(tmp_path / "changed.yaml", cfg), _target(work / "results"))


@pytest.mark.slow
def test_dpo_stage_writes_pairs_models_and_table(dpo_run):
    work, cfg = dpo_run
    r = work / "results" / "t"
    with np.load(r / "preferences" / "s0" / "pairs.npz") as z:
        w, lo, sw, sl = z["winners"], z["losers"], z["winner_scores"], z["loser_scores"]
        identity = json.loads(str(z["choice_model"]))
    info = json.loads((r / "preferences" / "s0" / "preferences.json").read_text())
    assert w.dtype == np.uint8 and w.shape == lo.shape and w.shape[1:] == (8, 8, 1)
    assert len(w) == info["pairs_kept"] <= info["pairs_sampled"] == 8
    assert np.all(sw > sl)  # ties dropped, the winner scored higher
    assert identity["kind"] == "classifier" and identity["label"] == 3 and len(identity["weights_sha256"]) == 64
    table = pd.read_csv(r / "report" / "dpo.csv")
    assert table["run"].tolist() == ["d", "sft"] and table["method"].tolist() == ["dpo", "sft"]
    assert table["n_compared"].tolist() == [16, 16]  # sampling.num_samples of the one seed
    assert ((table["win_rate_low"] <= table["win_rate"]) & (table["win_rate"] <= table["win_rate_high"])).all()
    assert table.loc[0, "beta"] == 5.0 and np.isnan(table.loc[1, "beta"]) and np.isnan(table.loc[1, "implicit_accuracy"])
    assert 0 <= table.loc[0, "implicit_accuracy"] <= 1 and (table["fid"] > 0).all() and (table["fid_reference"] > 0).all()
    log = json.loads((r / "models" / "dpo.d.s0" / "dpo_log.2.json").read_text())
    assert [row["step"] for row in log["history"]] == [0, 1] and log["history"][0]["implicit_accuracy"] == 0.5
    cost = json.loads((r / "models" / "dpo.d.s0" / "cost.2.json").read_text())
    assert cost["method"] == "dpo" and cost["steps"] == 2 and cost["pairs"] == len(w)


@pytest.mark.slow
def test_beta_replans_training_not_pairs_and_the_choice_model_replans_both(dpo_run, tmp_path):
    assert _replan(dpo_run, tmp_path, lambda c: None) == {}
    beta = _replan(dpo_run, tmp_path, lambda c: c["dpo"].update(beta=50.0))
    assert beta.get("train_dpo") == 1 and "make_preferences" not in beta  # sft has no beta
    assert beta.get("sample") == 1 and beta.get("evaluate") == 1 and beta.get("dpo_report") == 1
    choice = _replan(dpo_run, tmp_path, lambda c: c["dpo"]["choice_model"].update(label=4))
    assert choice.get("make_preferences") == 1 and choice.get("train_dpo") == 2 and choice.get("dpo_report") == 1


def test_npo_and_dpo_unlearning_plan_one_job_per_forget_set_and_seed(tmp_path):
    cfg = tiny_config(tmp_path / "results")
    cfg["unlearning"] = {"methods": ["npo", "dpo"], "npo": {"steps": 2, "beta": 10.0}, "dpo": {"steps": 2}}
    jobs = planned_jobs(tmp_path, write_config(tmp_path / "c.yaml", cfg))
    assert jobs["unlearn"] == 2 * 2 and jobs["klom"] == 2 * 2


@pytest.mark.parametrize("change, message", [
    (lambda d: d.update(sample_seed=0), "dpo.sample_seed: 0 equals sampling.seed"),
    (lambda d: d["runs"].append({"name": "d"}), "dpo.runs: duplicate run name 'd'"),
    (lambda d: d.update(seeds=[5]), r"dpo.seeds\[0\]: seed 5 is not in seeds"),
    (lambda d: d["choice_model"].update(kind="function", function="nocolon"), "expected module:function"),
    (lambda d: d["choice_model"].update(kind="pairs", pairs_file="/nonexistent.npz"), "file not found: /nonexistent.npz"),
])
def test_bad_dpo_settings_fail_before_planning(tmp_path, change, message):
    from diffunlearn.config import ConfigError, validate_config

    cfg = _cfg(tmp_path / "results")
    change(cfg["dpo"])
    with pytest.raises(ConfigError, match=message):
        validate_config(cfg)
