"""dpo_report: report/dpo.csv, one row per run of dpo.runs (its seeds pooled): win rate against the reference under the
choice model on the samples of sampling.seed (the same noise for both), mean score, FID, IS, implicit accuracy, cost."""
from diffunlearn.warm_start import run_warm

run_warm()  # where a warm process is available, a fork of it runs this job (diffunlearn.warm_start)

import json

import numpy as np
import pandas as pd

from diffunlearn import naming
from diffunlearn.choice import dpo_row, load_choice_model, run_settings
from diffunlearn.io import atomic_path
from diffunlearn.snakemake_io import JobLog, job_device

log = JobLog(snakemake)
p, inp = snakemake.params, snakemake.input
cfg = snakemake.config["dpo"]
score = None
if p.choice["kind"] != "pairs":
    score, identity = load_choice_model(p.choice, inp.get("classifier"), job_device(p.device))
    log(f"choice model: {json.dumps(identity)}")


def by_model(paths):
    """{model: path} of files under .../<model>/... (samples, metrics, models)."""
    out = {}
    for path in paths:
        model = next(part for part in str(path).split("/")[::-1] if "." in part and part.split(".")[0] in naming.TEMPLATES
                     and not part.endswith((".json", ".npz")))
        out[model] = path
    return out


def read_json(path):
    with open(path) as fh:
        return json.load(fh)


samples, metrics = by_model(inp.samples), by_model(inp.metrics)
costs, logs = by_model(inp.costs), by_model(inp.logs)
scores = {}
for model, path in samples.items():
    with np.load(path) as z:
        scores[model] = score(z["images"]) if score is not None else np.array([])
rows = []
for run in p.runs:
    pairs = [(naming.dpo(run, s), naming.original(s)) for s in p.seeds]
    rows.append(dpo_row(run, run_settings(cfg, run), [scores[m] for m, _ in pairs], [scores[r] for _, r in pairs],
                        [read_json(metrics[m]) for m, _ in pairs], [read_json(metrics[r]) for _, r in pairs],
                        [read_json(logs[m])["history"] for m, _ in pairs], [read_json(costs[m]) for m, _ in pairs],
                        p.interval))
    log(json.dumps(rows[-1]))
with atomic_path(snakemake.output.table) as tmp:
    pd.DataFrame(rows).to_csv(tmp, index=False)
