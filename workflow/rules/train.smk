rule train_original:
    input:
        data=MODEL_DATA,
    output:
        *[directory(f"{MODELS['original']}/checkpoint-{s}") for s in TRAIN_STEPS],
        cost=f"{MODELS['original']}/cost.json",
    params:
        train=training_params(parallel=True),
        model=config["model"],
        diffusion=config["diffusion"],
        device=config["device"],
    log:
        f"{R}/logs/train_original/s{{seed}}.log",
    benchmark:
        f"{R}/benchmarks/train_original/s{{seed}}.tsv"
    threads: config["train"]["threads"]
    resources:
        **rule_resources("train", processes=TRAIN_PROCESSES),
    conda:
        "../../envs/diffunlearn.yaml"
    script:
        "../scripts/train.py"


rule train_oracle:
    input:
        data=MODEL_DATA,
        forget=f"{R}/forget_sets/{{forget}}.json",
    output:
        *[directory(f"{MODELS['oracle']}/checkpoint-{s}") for s in TRAIN_STEPS],
        cost=f"{MODELS['oracle']}/cost.json",
    params:
        train=training_params(parallel=True),
        model=config["model"],
        diffusion=config["diffusion"],
        device=config["device"],
    log:
        f"{R}/logs/train_oracle/{{forget}}.s{{seed}}.log",
    benchmark:
        f"{R}/benchmarks/train_oracle/{{forget}}.s{{seed}}.tsv"
    threads: config["train"]["threads"]
    resources:
        **rule_resources("train", processes=TRAIN_PROCESSES),
    conda:
        "../../envs/diffunlearn.yaml"
    script:
        "../scripts/train.py"
