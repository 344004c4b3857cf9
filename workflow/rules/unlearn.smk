

rule unlearn:
    input:
        data=MODEL_DATA,
        forget=f"{R}/forget_sets/{{forget}}.json",
        source=unlearn_source,
    output:
        checkpoint=directory(f"{MODELS['unlearn']}/checkpoint-{{step}}"),
        cost=f"{MODELS['unlearn']}/cost.{{step}}.json",
    log:
        f"{R}/logs/unlearn/{{method}}.{{forget}}.s{{seed}}.step{{step}}.log",
    benchmark:
        f"{R}/benchmarks/unlearn/{{method}}.{{forget}}.s{{seed}}.step{{step}}.tsv"
    conda:
        "../../envs/diffunlearn.yaml"
    threads: UNLEARN["threads"]
    resources:
        **rule_resources("unlearn"),
    params:
        method="{method}",  # the wildcard, as a string pattern (no per-job function)
        hp=lambda wc: UNLEARN[wc.method],
        train=training_params(),
        model=config["model"],
        diffusion=config["diffusion"],
        device=config["device"],
    script:
        "../scripts/unlearn.py"


rule prune_fine_tune:
    input:
        data=MODEL_DATA,
        source=f"{MODELS['original']}/checkpoint-{TRAIN_STEPS[-1]}",
    output:
        checkpoint=directory(f"{MODELS['pruned']}/checkpoint-{{step}}"),
        cost=f"{MODELS['pruned']}/cost.{{step}}.json",
    log:
        f"{R}/logs/prune_fine_tune/s{{seed}}.step{{step}}.log",
    benchmark:
        f"{R}/benchmarks/prune_fine_tune/s{{seed}}.step{{step}}.tsv"
    conda:
        "../../envs/diffunlearn.yaml"
    threads: UNLEARN["threads"]
    resources:
        **rule_resources("unlearn"),
    params:
        method="prune_fine_tune",
        hp=UNLEARN["prune_fine_tune"],
        train=training_params(),
        model=config["model"],
        diffusion=config["diffusion"],
        device=config["device"],
    script:
        "../scripts/unlearn.py"


rule margins:
    input:
        data=MODEL_DATA,
        checkpoint=lambda wc: final_checkpoint(wc.model),
    output:
        f"{R}/margins/{{model}}.npy",
    log:
        f"{R}/logs/margins/{{model}}.log",
    benchmark:
        f"{R}/benchmarks/margins/{{model}}.tsv"
    conda:
        "../../envs/diffunlearn.yaml"
    threads: config["margins"]["threads"]
    resources:
        **rule_resources("margins"),
    params:
        # timesteps: a param only when not "uniform", so that margins computed before the option stay valid
        margins={
            k: v
            for k, v in speed.job_params("margins", config["margins"]).items()
            if k != "threads" and (k, v) != ("timesteps", "uniform")
        },
        diffusion=config["diffusion"],
        device=config["device"],
    script:
        "../scripts/margins.py"


rule klom:
    input:
        unpack(klom_inputs),
    output:
        summary=f"{R}/klom/{{method}}.{{forget}}.json",
        values=f"{R}/klom/{{method}}.{{forget}}.npz",
    log:
        f"{R}/logs/klom/{{method}}.{{forget}}.log",
    benchmark:
        f"{R}/benchmarks/klom/{{method}}.{{forget}}.tsv"
    conda:
        "../../envs/diffunlearn.yaml"
    threads: 1
    resources:
        **rule_resources("default"),
    params:
        klom=config["klom"],
    script:
        "../scripts/klom.py"
