"""train_subset: a model without the removed units: retrained from scratch, or sparsified-unlearned from the pruned model."""
from diffunlearn.warm_start import run_warm

run_warm()  # where a warm process is available, a fork of it runs this job (diffunlearn.warm_start)

import os

import numpy as np

from diffunlearn import naming
from diffunlearn.attribution.removal import units_to_examples
from diffunlearn.data import load_model_inputs
from diffunlearn.io import write_json_atomic
from diffunlearn.snakemake_io import JobLog, job_device
from diffunlearn.speed import with_speed_keys
from diffunlearn.train import TrainRun, cost_record, descend_on, fine_tune_config, run_training

log = JobLog(snakemake)
p, wc = snakemake.params, snakemake.wildcards
images = load_model_inputs(snakemake.input.data)["train"]  # images, or their latents
with np.load(snakemake.input.subsets, allow_pickle=False) as z:
    kind, index = naming.parse_subset(wc.subset)
    kept_units = z[kind][index]
    keep = units_to_examples(kept_units, z["unit_of_example"])
log(f"{wc.method} on subset {wc.subset}: {int(kept_units.sum())}/{len(kept_units)} units, {int(keep.sum())} examples")
train_cfg = with_speed_keys("train", p.train, snakemake.config)
if wc.method == "sparsified":
    hp = p.hp
    train_cfg = fine_tune_config(train_cfg, hp)
run = TrainRun(
    out_dir=os.path.dirname(snakemake.output.checkpoint), sources={"train": images[keep]}, train_cfg=train_cfg,
    model_cfg=p.model, diffusion_cfg=p.diffusion, seed=int(wc.seed), device=job_device(p.device),
    objective=descend_on("train"), checkpoint_steps=[train_cfg["steps"]],
    init_from=snakemake.input.get("source"), init_weights="ema",
    extra_state={"method": wc.method, "subset": wc.subset},
)
summary = run_training(run, log=log)
write_json_atomic(snakemake.output.cost, cost_record(wc.method, summary, subset=wc.subset))
