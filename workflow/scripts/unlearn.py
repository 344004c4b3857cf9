"""unlearn / prune_fine_tune: fine-tune an original (or pruned) model with a method's objective (lora: through an
adapter; iu: one influence step instead); write its cost."""
from diffunlearn.warm_start import run_warm

run_warm()  # where a warm process is available, a fork of it runs this job (diffunlearn.warm_start)

import os

from diffunlearn.data import load_forget_set, load_model_inputs, retain_mask
from diffunlearn.influence import influence_checkpoint
from diffunlearn.io import write_json_atomic
from diffunlearn.lora import lora_prepare, lora_settings
from diffunlearn.prune import pruning_prepare, size_record
from diffunlearn.snakemake_io import JobLog, job_device
from diffunlearn.speed import with_speed_keys
from diffunlearn.train import TrainRun, cost_record, fine_tune_config, run_training
from diffunlearn.unlearn import objective, preference_loss, preference_pairs, sources_of

log = JobLog(snakemake)
p = snakemake.params
method, hp = p.method, p.hp
train_images = load_model_inputs(snakemake.input.data)["train"]  # images, or their latents
if method == "prune_fine_tune":
    sources = {"train": train_images}
else:
    forget = load_forget_set(snakemake.input.forget)
    keep = retain_mask(len(train_images), forget)
    sources = {"forget": train_images[forget], "retain": train_images[keep], "train": train_images}
    log(f"{method}: forget {len(forget)}, retain {int(keep.sum())} examples")
    if method == "dpo":  # retain winners paired with forget losers
        sources.update(preference_pairs(sources["retain"], sources["forget"], int(snakemake.wildcards.seed)))
sources = {k: sources[k] for k in sources_of(method)}

out_dir, seed, device = os.path.dirname(snakemake.output.checkpoint), int(snakemake.wildcards.seed), job_device(p.device)
batch_shape = (hp["batch_size"], train_images.shape[3], train_images.shape[1], train_images.shape[2])
extra = {"method": method, "hyperparameters": hp}
prune_info = {}
if method == "iu":  # one WoodFisher step, no training loop
    summary = influence_checkpoint(out_dir, snakemake.input.source, sources["forget"], sources["retain"], p.diffusion,
                                   {**hp, "seed": hp["seed"] * 1_000_003 + seed}, device, extra)
    prune_info = summary["influence"]
else:
    train_cfg = fine_tune_config(with_speed_keys("train", p.train, snakemake.config), hp)
    prepare = {"prune_fine_tune": lambda: pruning_prepare(hp["pruning_ratio"], batch_shape, prune_info),
               "lora": lambda: lora_prepare(lora_settings(hp))}.get(method, lambda: None)()
    run = TrainRun(out_dir=out_dir, sources=sources, train_cfg=train_cfg, model_cfg=p.model, diffusion_cfg=p.diffusion,
                   seed=seed, device=device, objective=objective(method, hp), init_from=snakemake.input.source,
                   init_weights="ema", extra_state=extra, prepare=prepare, loss=preference_loss(method, hp),
                   reference="init" if method in ("npo", "dpo") else None)
    summary = run_training(run, log=log)
from diffunlearn.checkpoint import load_ema_unet  # noqa: E402

cost = cost_record(method, summary, source=snakemake.input.source,
                   **size_record(load_ema_unet(snakemake.output.checkpoint), batch_shape), **prune_info)
log(f"cost: {cost}")
write_json_atomic(snakemake.output.cost, cost)
