rule train_original:
    input:
        data=MODEL_DATA,
    output:
        *[directory(f"{MODELS['original']}/checkpoint-{s}") for s in TRAIN_STEPS],
        cost=f"{MODELS['original']}/cost.json",
    log:
        f"{R}/logs/train_original/s{{seed}}.log",
    benchmark:
        f"{R}/benchmarks/train_original/s{{seed}}.tsv"
    conda:
        "../../envs/diffunlearn.yaml"
    threads: config["train"]["threads"]
    resources:
        **rule_resources("train", processes=TRAIN_PROCESSES),
    params:
        train=training_params(parallel=True),
        model=config["model"],
        diffusion=config["diffusion"],
        device=config["device"],
    script:
        "../scripts/train.py"


# oracle.<forget>.s<k> and, for klom.reference: extra, the second independent set oracle2.<forget>.s<k>. Each
# trains with the seed of its own family (diffunlearn.seeding), never the original's: a param, so that oracles
# trained before with the original's seed are trained again.
rule train_oracle:
    input:
        data=MODEL_DATA,
        forget=f"{R}/forget_sets/{{forget}}.json",
    output:
        *[directory(f"{R}/models/{{oracle_kind}}.{{forget}}.s{{seed}}/checkpoint-{s}") for s in TRAIN_STEPS],
        cost=f"{R}/models/{{oracle_kind}}.{{forget}}.s{{seed}}/cost.json",
    log:
        f"{R}/logs/train_oracle/{{oracle_kind}}.{{forget}}.s{{seed}}.log",
    benchmark:
        f"{R}/benchmarks/train_oracle/{{oracle_kind}}.{{forget}}.s{{seed}}.tsv"
    wildcard_constraints:
        oracle_kind="oracle|oracle2",
    conda:
        "../../envs/diffunlearn.yaml"
    threads: config["train"]["threads"]
    resources:
        **rule_resources("train", processes=TRAIN_PROCESSES),
    params:
        train=training_params(parallel=True),
        rng_seed=lambda wc: model_rng_seed(f"{wc.oracle_kind}.{wc.forget}", int(wc.seed)),
        model=config["model"],
        diffusion=config["diffusion"],
        device=config["device"],
    script:
        "../scripts/train.py"
