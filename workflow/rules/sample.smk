rule sample:
    input:
        **LATENT_DECODER,
        checkpoint=f"{R}/models/{{model}}/checkpoint-{{step}}",
    output:
        samples=f"{R}/samples/{{model}}/step{{step}}/samples.npz",
        grid=f"{R}/samples/{{model}}/step{{step}}/grid.png",
    log:
        f"{R}/logs/sample/{{model}}.step{{step}}.log",
    benchmark:
        f"{R}/benchmarks/sample/{{model}}.step{{step}}.tsv"
    conda:
        "../../envs/diffunlearn.yaml"
    threads: config["sampling"]["threads"]
    resources:
        **rule_resources("sample"),
    params:
        **({"scaling_factor": LATENTS["scaling_factor"]} if LATENTS["enabled"] else {}),
        sampling={k: v for k, v in speed.job_params("sampling", config["sampling"]).items() if k != "threads"},
        diffusion=config["diffusion"],
        device=config["device"],
    script:
        "../scripts/sample.py"
