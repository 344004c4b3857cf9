"""sample: draw samples from one checkpoint's EMA weights; uint8 array + PNG grid."""
from diffunlearn.warm_start import run_warm

run_warm()  # where a warm process is available, a fork of it runs this job (diffunlearn.warm_start)

import time

from diffunlearn.checkpoint import load_ema_unet, load_state
from diffunlearn.grid import image_grid, save_png
from diffunlearn.io import save_npz_atomic
from diffunlearn.models import build_scheduler
from diffunlearn.sample import sample_images
from diffunlearn.snakemake_io import JobLog, job_device
from diffunlearn.speed import resolve_compile, resolve_switch, with_speed_keys

log = JobLog(snakemake)
cfg = with_speed_keys("sampling", snakemake.params.sampling, snakemake.config)
device = job_device(snakemake.params.device)
unet = load_ema_unet(snakemake.input.checkpoint).to(device)
decode = None
if "vqvae" in snakemake.input.keys():  # latent diffusion: sample latents, decode them with the VQ-VAE of the latents
    from diffunlearn.latents import load_vqvae_copy, make_decoder

    factor = snakemake.params.scaling_factor
    vqvae = load_vqvae_copy(snakemake.input.vqvae).to(device).eval()
    # the decoder's batch size is not a param: it does not change the samples
    decode = make_decoder(vqvae, factor, batch_size=snakemake.config["latents"]["decode_batch_size"])
    log(f"latent diffusion: latents {unet.config.in_channels}x{unet.config.sample_size}x{unet.config.sample_size}, "
        f"decoded by {snakemake.input.vqvae} (scaling factor {factor})")
# clip the predicted x0 to [-1, 1] in pixel space only: latents are not bounded
scheduler = build_scheduler(snakemake.params.diffusion, kind=cfg["scheduler"], clip_sample=decode is None)
# Speed switches ("auto": on for CUDA; compile also on a CPU for long jobs); they do not change the samples
# beyond float tolerance.
compile_unet = resolve_compile(cfg.get("compile", "auto"), device, unet, cfg["num_samples"] * cfg["num_inference_steps"])
fast = dict(compile=compile_unet, cuda_graphs=compile_unet and resolve_switch(cfg.get("cuda_graphs", "auto"), device),
            channels_last=resolve_switch(cfg.get("channels_last", "auto"), device))
log("fast path: " + ", ".join(f"{k}={'on' if v else 'off'}" for k, v in fast.items()))
log.ready()
t0 = time.time()
images = sample_images(unet, scheduler, cfg["num_samples"], num_inference_steps=cfg["num_inference_steps"],
                       seed=cfg["seed"], batch_size=cfg["batch_size"], eta=cfg["eta"], device=device,
                       progress=lambda n: log(f"{n}/{cfg['num_samples']} samples"), decode=decode, **fast)
seconds = time.time() - t0
log(f"sampled {len(images)} images in {seconds:.1f} s")
# the training record travels with the samples, so that evaluate reads only the samples and the reference
state = load_state(snakemake.input.checkpoint)
training = {f"train_{k}": state[k] for k in ("wall_seconds", "device") if state.get(k) is not None}
save_npz_atomic(snakemake.output.samples, images=images, seconds=seconds, **training)
grid = image_grid(images[: cfg["grid_size"]])
save_png(snakemake.output.grid, grid, upscale=max(1, 256 // grid.shape[0]))
