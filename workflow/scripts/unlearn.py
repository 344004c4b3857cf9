"""unlearn / prune_fine_tune: fine-tune an original (or pruned) model with a method's objective; write its cost."""
import os

from diffunlearn.data import load_forget_set, load_model_inputs, retain_mask, write_json_atomic
from diffunlearn.snakemake_io import JobLog, job_device
from diffunlearn.train import TrainRun, run_training
from diffunlearn.unlearn import keep_pruned_at_zero, nonzero_fraction, objective, sources_of, structured_prune_

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
sources = {k: sources[k] for k in sources_of(method)}

train_cfg = {**p.train, "steps": hp["steps"], "lr": hp["lr"], "batch_size": hp["batch_size"], "ema_decay": hp["ema_decay"],
             "grad_clip": hp["grad_clip"], "warmup_steps": 0, "checkpoint_every": hp["steps"],
             "log_every": min(p.train["log_every"], hp["steps"])}
prune_info = {}
run = TrainRun(
    out_dir=os.path.dirname(snakemake.output.checkpoint), sources=sources, train_cfg=train_cfg, model_cfg=p.model,
    diffusion_cfg=p.diffusion, seed=int(snakemake.wildcards.seed), device=job_device(p.device),
    objective=objective(method, hp), init_from=snakemake.input.source, init_weights="ema",
    extra_state={"method": method, "hyperparameters": hp},
    prepare=(lambda raw, ema: prune_info.update(structured_prune_(raw, hp["pruning_ratio"]))) if method == "prune_fine_tune" else None,
    post_step_factory=keep_pruned_at_zero if method in ("prune_fine_tune", "sparsified") else None,
)
summary = run_training(run, log=log)
from diffunlearn.checkpoint import load_ema_unet  # noqa: E402

cost = {"method": method, "steps": summary["step"], "examples_seen": summary["examples_seen"],
        "wall_seconds": summary["wall_seconds"], "device": summary["device"], "source": snakemake.input.source,
        "nonzero_parameter_fraction": nonzero_fraction(load_ema_unet(snakemake.output.checkpoint)), **prune_info}
log(f"cost: {cost}")
write_json_atomic(snakemake.output.cost, cost)
