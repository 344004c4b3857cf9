"""lds: Spearman correlation between predicted and actual behaviour on held-out retrained models, vs number of subsets."""
from diffunlearn.warm_start import run_warm

run_warm()  # where a warm process is available, a fork of it runs this job (diffunlearn.warm_start)

import json

import numpy as np
import pandas as pd

from diffunlearn import naming
from diffunlearn.attribution.experiment import behaviour_value, lds_rows, lds_sizes, plot_lds
from diffunlearn.attribution.removal import estimator_rows
from diffunlearn.snakemake_io import JobLog

log = JobLog(snakemake)
a, inp, p = snakemake.params.attribution, snakemake.input, snakemake.params
n_train = json.load(open(inp.info))["num_train"]
z = np.load(inp.subsets, allow_pickle=False)
masks, heldout = z["masks"], z["heldout"]
est_rows = estimator_rows(a["estimators"], a["removal"], a["num_subsets"])
behaviours = pd.read_csv(inp.behaviours).set_index("model")
held = {}
for i, model in enumerate(p.heldout_models):
    metric = json.load(open(inp.metrics[i])) if inp.metrics else None
    margins = np.load(inp.margins[i]) if inp.margins else None
    held[model] = {b: behaviour_value(b, metric, margins, n_train) for b in a["behaviours"]}
rows = []
for method in a["methods"]:
    ids = naming.subset_models(behaviours.index, method)
    for b in a["behaviours"]:
        values = behaviours.loc[ids, b].to_numpy()
        actual = np.array([[held[naming.attributed("retrain", naming.subset("heldout", i), s)][b] for i in range(len(heldout))] for s in a["lds"]["seeds"]])
        v_empty, v_full = behaviours.loc[p.empty_model, b], behaviours.loc[p.full_model, b]
        for est in a["estimators"]:
            rows_of = list(est_rows[est])  # this estimator's own draws
            try:
                curve = lds_rows(est, masks[rows_of], values[rows_of], v_empty, v_full, heldout, actual,
                                 lds_sizes(len(rows_of), a["lds"]["sizes"]), seed=a["seed"],
                                 num_draws=a["lds"]["null_draws"])
            except ValueError as exc:
                log(f"LDS {est} / {method} / {b}: skipped ({exc})")
                continue
            for point in curve:
                rows.append({"method": method, "estimator": est, "behaviour": b, "num_subsets": point["num_subsets"],
                             "lds_mean": point["mean"], "lds_low": point["low"], "lds_high": point["high"],
                             "lds_boot_low": point["boot_low"], "lds_boot_high": point["boot_high"],
                             "null_p95": point["null_p95"], "ceiling": point["ceiling"],
                             "num_heldout": point["num_heldout"], "num_seeds": point["num_seeds"],
                             "per_seed": json.dumps(point["per_seed"])})
table = pd.DataFrame(rows, columns=["method", "estimator", "behaviour", "num_subsets", "lds_mean", "lds_low",
                                    "lds_high", "lds_boot_low", "lds_boot_high", "null_p95", "ceiling",
                                    "num_heldout", "num_seeds", "per_seed"])
table.to_csv(snakemake.output.table, index=False)
plot_lds(table, snakemake.output.plot)
log(table.to_string())
