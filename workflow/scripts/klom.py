"""klom: KLOM per example between the unlearned and the oracle models of one forget set; per-split summary."""
import json

import numpy as np

from diffunlearn.data import save_npz_atomic, write_json_atomic
from diffunlearn.metrics.klom import klom_per_example, noise_floor, summarize_klom
from diffunlearn.snakemake_io import JobLog

log = JobLog(snakemake)
cfg, wc = snakemake.params.klom, snakemake.wildcards
kw = dict(bins=cfg["bins"], eps=cfg["eps"], clip=cfg["clip"])
unlearned = np.stack([np.load(f) for f in snakemake.input.unlearned])
oracle = np.stack([np.load(f) for f in snakemake.input.oracle])
info = json.load(open(snakemake.input.info))
forget = np.asarray(json.load(open(snakemake.input.forget))["indices"])
n_train, n_val = info["num_train"], info["num_validation"]
retain = np.setdiff1d(np.arange(n_train), forget)
splits = {"forget": forget, "retain": retain, "validation": np.arange(n_train, n_train + n_val)}

if wc.method == "retrain":
    # The oracles against themselves: one half against the other, i.e. the noise floor itself.
    values = noise_floor(oracle, rng_seed=cfg["floor_seed"], **kw)
else:
    values = klom_per_example(unlearned, oracle, **kw)
floor = noise_floor(oracle, rng_seed=cfg["floor_seed"], **kw) if len(oracle) >= 2 else np.full(len(values), np.nan)
rows = summarize_klom(values, splits)
floor_rows = {r["split"]: r for r in summarize_klom(floor, splits)}
costs = [json.load(open(f)) for f in snakemake.input.costs]
cost = {
    "cost_steps": float(np.mean([c.get("steps", 0) for c in costs])) if costs else 0.0,
    "cost_examples_seen": float(np.mean([c.get("examples_seen", 0) for c in costs])) if costs else 0.0,
    "cost_wall_seconds": float(np.mean([c.get("wall_seconds", 0.0) for c in costs])) if costs else 0.0,
    "cost_device": costs[0].get("device") if costs else None,
}
shared = [json.load(open(f)) for f in snakemake.input.shared_costs]
cost["shared_wall_seconds"] = float(np.mean([c["wall_seconds"] for c in shared])) if shared else 0.0
out = []
for r in rows:
    fr = floor_rows[r["split"]]
    out.append({"method": wc.method, "forget_set": wc.forget, **r, "floor_p95": fr["p95"], "floor_mean": fr["mean"],
                "floor_p99": fr["p99"], "n_unlearned": len(unlearned), "n_oracle": len(oracle), **cost})
log(json.dumps(out, indent=1))
save_npz_atomic(snakemake.output.values, klom=values, floor=floor)
write_json_atomic(snakemake.output.summary, out)
