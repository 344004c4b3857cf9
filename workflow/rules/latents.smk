# Latent diffusion: the prepared images of a data set encoded once by a VQ-VAE (latents.enabled).
# params carry only what changes the latents (the VQ-VAE and the factor), so a training setting never
# re-plans this job, and a different VQ-VAE re-plans it and, through its outputs, everything downstream.
# The encoder's batch size and threads are read from the config by the script: they do not change the latents.


rule precompute_latents:
    input:
        data=f"{R}/data/{{dataset}}.npz",
    output:
        latents=f"{R}/latents/{{dataset}}.npz",
        info=f"{R}/latents/{{dataset}}.json",
        vqvae=directory(f"{R}/latents/{{dataset}}.vqvae"),
    log:
        f"{R}/logs/precompute_latents/{{dataset}}.log",
    benchmark:
        f"{R}/benchmarks/precompute_latents/{{dataset}}.tsv"
    wildcard_constraints:
        dataset=r"[A-Za-z0-9_-]+",
    conda:
        "../../envs/diffunlearn.yaml"
    threads: LATENTS["threads"]
    resources:
        **rule_resources("latents"),
    params:
        vqvae={k: LATENTS[k] for k in ("vqvae", "subfolder", "scaling_factor")},
        device=config["device"],
    script:
        "../scripts/precompute_latents.py"
