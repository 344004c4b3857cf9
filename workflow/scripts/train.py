"""train_original / train_oracle: one training run; resumes from its last complete checkpoint."""
from diffunlearn.warm_start import run_warm

run_warm()  # where a warm process is available, a fork of it runs this job (diffunlearn.warm_start)

import os

from diffunlearn.data import load_forget_set, load_model_inputs, retain_mask
from diffunlearn.io import write_json_atomic
from diffunlearn.seeding import training_rng_seed
from diffunlearn.snakemake_io import JobLog, job_device
from diffunlearn.speed import with_speed_keys
from diffunlearn.train import TrainRun, cost_record, train_data_parallel

log = JobLog(snakemake)
p = snakemake.params
if p.train.get("num_processes", 1) > 1:
    # the training processes are forked from this one: the device check must not initialise CUDA here
    os.environ.setdefault("PYTORCH_NVML_BASED_CUDA_CHECK", "1")
train_images = load_model_inputs(snakemake.input.data)["train"]  # images, or their latents
if "forget" in snakemake.input.keys():
    forget = load_forget_set(snakemake.input.forget)
    train_images = train_images[retain_mask(len(train_images), forget)]
    log(f"oracle: training on the {len(train_images)} retained examples ({len(forget)} forgotten)")
run = TrainRun(
    out_dir=os.path.dirname(snakemake.output.cost), sources={"train": train_images},
    train_cfg=with_speed_keys("train", p.train, snakemake.config), model_cfg=p.model, diffusion_cfg=p.diffusion,
    seed=training_rng_seed(os.path.basename(os.path.dirname(snakemake.output.cost))),  # oracles: their family's own seed
    device=job_device(p.device),
)
summary = train_data_parallel(run, p.train.get("num_processes", 1), log=log)  # 1: run_training in this process
log(f"done: {summary['step']} steps, {summary['wall_seconds']:.1f} s on {summary['device']}")
write_json_atomic(snakemake.output.cost, cost_record("retrain" if "forget" in snakemake.input.keys() else "train", summary))
