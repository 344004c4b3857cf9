"""train_dpo: fine-tune a copy of the reference (the original's EMA weights) on the preference pairs with the
Diffusion-DPO loss against the frozen reference, or SFT on the winners (dpo.sft); write its cost and loss log."""
from diffunlearn.warm_start import run_warm

run_warm()  # where a warm process is available, a fork of it runs this job (diffunlearn.warm_start)

import os

import numpy as np

from diffunlearn.choice import final_implicit_accuracy
from diffunlearn.io import write_json_atomic
from diffunlearn.objectives import descend_on
from diffunlearn.preference import PreferenceLoss
from diffunlearn.snakemake_io import JobLog, job_device
from diffunlearn.speed import with_speed_keys
from diffunlearn.train import TrainRun, cost_record, fine_tune_config, run_training

log = JobLog(snakemake)
p, wc = snakemake.params, snakemake.wildcards
hp = p.hp
with np.load(snakemake.input.pairs) as z:
    winners, losers = z["winners"], z["losers"]
mode = "sft" if hp["sft"] else "dpo"
log(f"{wc.name}: {mode} on {len(winners)} pairs" + ("" if hp["sft"] else f", beta {hp['beta']}"))
loss = PreferenceLoss(mode, beta=hp["beta"], loser_source="losers")
run = TrainRun(out_dir=os.path.dirname(snakemake.output.cost),
               sources={"winners": winners} if hp["sft"] else {"winners": winners, "losers": losers},
               train_cfg=fine_tune_config(with_speed_keys("train", p.train, snakemake.config), hp), model_cfg=p.model, diffusion_cfg=p.diffusion, seed=int(wc.seed),
               device=job_device(p.device), objective=descend_on("winners"), init_from=snakemake.input.reference,
               init_weights="ema", extra_state={"method": mode, "hyperparameters": hp}, loss=loss,
               reference=None if hp["sft"] else "init")
summary = run_training(run, log=log)
rows = loss.log_rows()
log(f"final implicit accuracy {final_implicit_accuracy(rows)} (last 10 % of {len(rows)} logged steps)")
write_json_atomic(snakemake.output.log_json, {"run": wc.name, "mode": mode, "hyperparameters": hp, "history": rows})
write_json_atomic(snakemake.output.cost, cost_record(mode, summary, source=snakemake.input.reference, pairs=len(winners)))
