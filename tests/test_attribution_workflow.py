"""Attribution through the DAG on a tiny config: subsets, subset models, scores, LDS."""
import numpy as np
import pandas as pd
import pytest

from conftest import planned_jobs, run_snakemake, tiny_config, write_config

pytestmark = pytest.mark.slow


def test_attribution_over_classes_end_to_end(tmp_path):
    cfg = tiny_config(tmp_path / "results", forget_sets=[], **{"unlearning.methods": [], "unlearning.forget_sets": None})
    cfg["data"]["max_examples"] = 200
    cfg["attribution"] = {
        "enabled": True, "unit": "class", "removal": None, "num_subsets": 3, "seed": 0,
        "methods": ["retrain", "sparsified"], "sparsified": {"steps": 2, "batch_size": 8},
        "estimators": ["shapley", "datamodel"], "behaviours": ["fid", "diversity", "margin"],
        "lds": {"num_subsets": 3, "seeds": [0, 1], "sizes": [2, 3], "top_k": 2, "null_draws": 100},
    }
    configfile = write_config(tmp_path / "c.yaml", cfg)
    jobs = planned_jobs(tmp_path, configfile)
    assert jobs["train_subset"] == 2 * (2 * 3) + 3 * 2  # per method: 3 draws for each of the 2 estimators
    assert jobs["draw_subsets"] == 1 and jobs["init_model"] == 1 and jobs["prune_fine_tune"] == 1
    run_snakemake(tmp_path, configfile)
    report = tmp_path / "results" / "t" / "report"
    scores = pd.read_csv(report / "attribution_scores.csv")
    assert list(scores.columns[:4]) == ["unit", "estimator", "behaviour", "score"]
    assert set(scores["estimator"]) == {"shapley", "datamodel"}
    assert scores["unit"].nunique() == 10
    # Shapley efficiency: per (method, behaviour) the scores add up to v_full - v_empty
    behaviours = pd.read_csv(tmp_path / "results" / "t" / "attribution" / "behaviours.csv").set_index("model")
    shap = scores[(scores.estimator == "shapley") & (scores.method == "retrain") & (scores.behaviour == "margin")]
    assert shap["score"].sum() == pytest.approx(behaviours.loc["original.s0", "margin"] - behaviours.loc["init.s0", "margin"])
    lds = pd.read_csv(report / "lds.csv")
    assert set(lds["num_subsets"]) == {2, 3}
    assert set(lds["method"]) == {"retrain", "sparsified"}
    # NaN where a fit on 2 draws predicts the same behaviour for every held-out subset (a constant has no rank)
    for column in ("lds_mean", "null_p95"):
        finite = lds[column].dropna()
        assert len(finite) > 0 and finite.between(-1, 1).all(), column
    assert (lds["num_heldout"] == 3).all() and lds["ceiling"].nunique() <= 3  # one ceiling per behaviour
    assert (behaviours["diversity"].between(0, np.log(10) + 1e-9)).all()
    cost = pd.read_csv(report / "attribution_cost.csv").set_index("method")
    assert cost.loc["retrain", "models"] == 6 and cost.loc["sparsified", "steps_per_model"] == 2
    assert cost.loc["sparsified", "shared_wall_seconds"] > 0
    for name in ("lds_vs_subsets.png", "attribution_top_bottom.png"):
        assert (report / name).stat().st_size > 1000
    masks = np.load(tmp_path / "results" / "t" / "attribution" / "subsets.npz")["masks"]
    assert masks.shape == (6, 10) and masks.any(axis=1).all() and not masks.all(axis=1).any()
    assert (masks[3:].sum(axis=1) == 5).all()  # the datamodel's own block: alpha-subsets of 5 of the 10 classes
