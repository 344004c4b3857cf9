"""lds: Spearman correlation between predicted and actual behaviour on held-out retrained models, vs number of subsets."""
import json

import numpy as np
import pandas as pd

from diffunlearn import naming
from diffunlearn.attribution.experiment import behaviour_value, lds_rows, lds_sizes, plot_lds
from diffunlearn.snakemake_io import JobLog

log = JobLog(snakemake)
a, inp, p = snakemake.params.attribution, snakemake.input, snakemake.params
n_train = json.load(open(inp.info))["num_train"]
z = np.load(inp.subsets, allow_pickle=False)
masks, heldout = z["masks"], z["heldout"]
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
            try:
                curve = lds_rows(est, masks[: len(values)], values, v_empty, v_full, heldout, actual,
                                 lds_sizes(len(values), a["lds"]["sizes"]))
            except ValueError as exc:
                log(f"LDS {est} / {method} / {b}: skipped ({exc})")
                continue
            for point in curve:
                rows.append({"method": method, "estimator": est, "behaviour": b, "num_subsets": point["num_subsets"],
                             "lds_mean": point["mean"], "lds_low": point["low"], "lds_high": point["high"],
                             "num_seeds": point["num_seeds"], "per_seed": json.dumps(point["per_seed"])})
table = pd.DataFrame(rows, columns=["method", "estimator", "behaviour", "num_subsets", "lds_mean", "lds_low",
                                    "lds_high", "num_seeds", "per_seed"])
table.to_csv(snakemake.output.table, index=False)
plot_lds(table, snakemake.output.plot)
log(table.to_string())
