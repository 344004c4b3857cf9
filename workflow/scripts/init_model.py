"""init_model: the randomly initialised UNet of a seed as checkpoint-0 (attribution's empty model)."""
from diffunlearn.warm_start import run_warm

run_warm()  # where a warm process is available, a fork of it runs this job (diffunlearn.warm_start)

from diffunlearn.checkpoint import write_initial_checkpoint
from diffunlearn.data import load_model_inputs
from diffunlearn.models import build_scheduler, build_unet
from diffunlearn.snakemake_io import JobLog

log = JobLog(snakemake)
shape = load_model_inputs(snakemake.input.data)["train"].shape  # images, or their latents
seed = int(snakemake.wildcards.seed)
unet = build_unet(snakemake.params.model, shape[1], shape[3], seed=seed)
write_initial_checkpoint(snakemake.output[0], unet, build_scheduler(snakemake.params.diffusion), seed)
log(f"initial weights of seed {seed} written")
