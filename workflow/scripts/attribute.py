"""attribute: behaviours of every subset model, attribution scores per estimator, cost table, top/bottom picture."""
from diffunlearn.warm_start import run_warm

run_warm()  # where a warm process is available, a fork of it runs this job (diffunlearn.warm_start)

import json

import numpy as np
import pandas as pd

from diffunlearn import naming
from diffunlearn.attribution.experiment import behaviour_value, estimate, plot_top_bottom
from diffunlearn.attribution.removal import estimator_rows
from diffunlearn.data import load_dataset
from diffunlearn.snakemake_io import JobLog

log = JobLog(snakemake)
a, inp, out = snakemake.params.attribution, snakemake.input, snakemake.output
n_train = json.load(open(inp.info))["num_train"]
z = np.load(inp.subsets, allow_pickle=False)
masks, unit_names = z["masks"], [str(n) for n in z["unit_names"]]
est_rows = estimator_rows(a["estimators"], a["removal"], a["num_subsets"])


def behaviours_of(models, metric_files, margin_files):
    rows = []
    for i, model in enumerate(models):
        metric = json.load(open(metric_files[i])) if metric_files else None
        margins = np.load(margin_files[i]) if margin_files else None
        rows.append({"model": model, **{b: behaviour_value(b, metric, margins, n_train) for b in a["behaviours"]}})
    return pd.DataFrame(rows)


p = snakemake.params
table = behaviours_of(p.models, inp.metrics, inp.margins)
table.to_csv(out.behaviours, index=False)
by_model = table.set_index("model")
scores = []
for method in a["methods"]:
    ids = naming.subset_models(p.models, method)
    for b in a["behaviours"]:
        values = by_model.loc[ids, b].to_numpy()
        v_empty, v_full = by_model.loc[p.empty_model, b], by_model.loc[p.full_model, b]
        for est in a["estimators"]:
            rows = list(est_rows[est])  # the draws of this estimator's own distribution
            try:
                s, intercept = estimate(est, masks[rows], values[rows], v_empty, v_full)
            except ValueError as exc:
                log(f"{est} / {method} / {b}: not estimable from these draws ({exc})")
                s = np.full(masks.shape[1], np.nan)
            for u, score in enumerate(s):
                scores.append({"unit": unit_names[u], "unit_index": u, "estimator": est, "behaviour": b,
                               "method": method, "score": float(score)})
scores = pd.DataFrame(scores)
scores[["unit", "estimator", "behaviour", "score", "method", "unit_index"]].to_csv(out.scores, index=False)

costs = [json.load(open(f)) for f in inp.costs]
shared = [json.load(open(f)) for f in inp.shared_costs]
cost_rows = []
for method in a["methods"]:
    c = [x for x in costs if x["method"] == method]
    cost_rows.append({"method": method, "models": len(c), "steps_per_model": np.mean([x["steps"] for x in c]),
                      "wall_seconds_per_model": np.mean([x["wall_seconds"] for x in c]),
                      "wall_seconds_total": np.sum([x["wall_seconds"] for x in c]),
                      "shared_wall_seconds": sum(x["wall_seconds"] for x in shared) if method == "sparsified" else 0.0,
                      "device": c[0]["device"] if c else None})
pd.DataFrame(cost_rows).to_csv(out.cost, index=False)
d = load_dataset(inp.data)
plot_top_bottom(scores.dropna(), d["train_images"], z["unit_of_example"], unit_names, out.picture, k=a["lds"]["top_k"])
log(f"scores for {scores['unit'].nunique()} units, {len(scores)} rows")
