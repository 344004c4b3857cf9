"""precompute_latents: encode the prepared images with the VQ-VAE once; latents, identity record, VQ-VAE copy."""
from diffunlearn.warm_start import run_warm

run_warm()  # where a warm process is available, a fork of it runs this job (diffunlearn.warm_start)

from diffunlearn.latents import precompute
from diffunlearn.snakemake_io import JobLog, job_device

log = JobLog(snakemake)
p = snakemake.params
record = precompute(
    snakemake.input.data, snakemake.output.latents, snakemake.output.info, snakemake.output.vqvae,
    source=p.vqvae["vqvae"], subfolder=p.vqvae["subfolder"], scaling_factor=p.vqvae["scaling_factor"],
    batch_size=snakemake.config["latents"]["batch_size"],  # not a param: it does not change the latents
    device=job_device(p.device), log=log,
)
log(f"done: latents {record['latent_shape']} of {record['num_train']} + {record['num_validation']} examples")
