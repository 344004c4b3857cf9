"""margins: the per-example model output (negative denoising loss on fixed (t, noise) pairs), train + validation."""
from diffunlearn.warm_start import run_warm

run_warm()  # where a warm process is available, a fork of it runs this job (diffunlearn.warm_start)

import numpy as np

from diffunlearn.checkpoint import load_ema_unet
from diffunlearn.data import load_model_inputs, to_model_space
from diffunlearn.io import save_npy_atomic
from diffunlearn.margins import compute_margins
from diffunlearn.models import build_scheduler
from diffunlearn.snakemake_io import JobLog, job_device
from diffunlearn.speed import resolve_compile, resolve_switch

log = JobLog(snakemake)
cfg = snakemake.params.margins
device = job_device(snakemake.params.device)
d = load_model_inputs(snakemake.input.data)  # images, or their latents
images = np.concatenate([d["train"], d["val"]])  # train split first, then validation
unet = load_ema_unet(snakemake.input.checkpoint).to(device)
alphas_cumprod = build_scheduler(snakemake.params.diffusion).alphas_cumprod
# Speed switches are read from the config, not the params: they do not change the margins beyond float
# tolerance, so switching them must not re-run the jobs.
speed = snakemake.config["margins"]
fast = dict(compile=resolve_compile(speed.get("compile", "auto"), device, unet, len(images) * cfg["num_pairs"]),
            channels_last=resolve_switch(speed.get("channels_last", "auto"), device))
log("fast path: " + ", ".join(f"{k}={'on' if v else 'off'}" for k, v in fast.items()))
log.ready()
values = compute_margins(unet, to_model_space(images), np.arange(len(images)), alphas_cumprod,
                         num_pairs=cfg["num_pairs"], seed=cfg["seed"], batch_size=cfg["batch_size"], device=device,
                         timesteps=cfg.get("timesteps", "uniform"), **fast)
log(f"{len(values)} margins, mean {values.mean():.5f}")
save_npy_atomic(snakemake.output[0], values)
