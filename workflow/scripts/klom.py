"""klom: KLOM, its floor at the same N and the excess, per example and per split, for one method and forget set."""
from diffunlearn.warm_start import run_warm

run_warm()  # where a warm process is available, a fork of it runs this job (diffunlearn.warm_start)

import json

import numpy as np

from diffunlearn.io import save_npz_atomic, write_json_atomic
from diffunlearn.metrics.klom import (
    check_klom_sides,
    klom_with_floor,
    models_per_side_warning,
    nan_summary,
    summary_rows,
)
from diffunlearn.snakemake_io import JobLog

log = JobLog(snakemake)
cfg, wc = snakemake.params.klom, snakemake.wildcards
unlearned = np.stack([np.load(f) for f in snakemake.input.unlearned])
oracle = np.stack([np.load(f) for f in snakemake.input.oracle])
floor_oracles = np.stack([np.load(f) for f in snakemake.input.floor_oracles]) if cfg["reference"] == "extra" else None
info = json.load(open(snakemake.input.info))
forget = np.asarray(json.load(open(snakemake.input.forget))["indices"])
n_train, n_val = info["num_train"], info["num_validation"]
retain = np.setdiff1d(np.arange(n_train), forget)
splits = {"forget": forget, "retain": retain, "validation": np.arange(n_train, n_train + n_val)}
n_floor = None if floor_oracles is None else len(floor_oracles)
log.ready()
warning = models_per_side_warning(len(unlearned), len(oracle), n_floor)
if warning:
    log(warning)

try:
    check_klom_sides(len(unlearned), len(oracle), n_floor)
except ValueError as exc:  # a run with a few seeds (the default config, tests) still gets its report
    log(f"warning: {exc}; KLOM, floor and excess are NaN")
    summary, klom, floor = nan_summary(splits), np.full(unlearned.shape[1], np.nan), np.full(unlearned.shape[1], np.nan)
else:
    summary, klom, floor = klom_with_floor(
        unlearned, oracle, splits, floor_oracles, num_splits=cfg["num_splits"], direction=cfg["direction"],
        bootstrap=cfg["bootstrap"], rng_seed=cfg["floor_seed"], bins=cfg["bins"], eps=cfg["eps"], clip=cfg["clip"],
    )
costs = [json.load(open(f)) for f in snakemake.input.costs]
cost = {
    "cost_steps": float(np.mean([c.get("steps", 0) for c in costs])) if costs else 0.0,
    "cost_examples_seen": float(np.mean([c.get("examples_seen", 0) for c in costs])) if costs else 0.0,
    "cost_wall_seconds": float(np.mean([c.get("wall_seconds", 0.0) for c in costs])) if costs else 0.0,
    "cost_device": costs[0].get("device") if costs else None,
}
shared = [json.load(open(f)) for f in snakemake.input.shared_costs]
cost["shared_wall_seconds"] = float(np.mean([c["wall_seconds"] for c in shared])) if shared else 0.0
sides = {"reference": cfg["reference"], "direction": cfg["direction"], "n_unlearned": len(unlearned),
         "n_oracle": len(oracle), "n_floor_oracles": n_floor or 0}
out = [{"method": wc.method, "forget_set": wc.forget, **row, **sides, **cost} for row in summary_rows(summary)]
log(json.dumps(out, indent=1))
save_npz_atomic(snakemake.output.values, klom=klom, floor=floor, excess=klom - floor)
write_json_atomic(snakemake.output.summary, out)
