rule sample:
    input:
        checkpoint=f"{R}/models/{{model}}/checkpoint-{{step}}",
        **LATENT_DECODER,
    output:
        samples=f"{R}/samples/{{model}}/step{{step}}/samples.npz",
        grid=f"{R}/samples/{{model}}/step{{step}}/grid.png",
    params:
        sampling={k: v for k, v in speed.job_params("sampling", config["sampling"]).items() if k != "threads"},
        diffusion=config["diffusion"],
        device=config["device"],
        **({"scaling_factor": LATENTS["scaling_factor"]} if LATENTS["enabled"] else {}),
    log:
        f"{R}/logs/sample/{{model}}.step{{step}}.log",
    benchmark:
        f"{R}/benchmarks/sample/{{model}}.step{{step}}.tsv"
    threads: config["sampling"]["threads"]
    resources:
        **rule_resources("sample"),
    conda:
        "../../envs/diffunlearn.yaml"
    script:
        "../scripts/sample.py"
