# The training speed-up study (config speedup.schemes; docs/methods.md): one original per scheme and seed,
# trained with the scheme's train.timesteps / train.loss_weighting, sampled and scored at every checkpoint like
# the originals (its baseline), and the table of steps / seconds to the baseline's final FID.


rule train_speedup:
    input:
        data=MODEL_DATA,
    output:
        *[directory(f"{MODELS['speedup']}/checkpoint-{s}") for s in TRAIN_STEPS],
        cost=f"{MODELS['speedup']}/cost.json",
    log:
        f"{R}/logs/train_speedup/{{scheme}}.s{{seed}}.log",
    benchmark:
        f"{R}/benchmarks/train_speedup/{{scheme}}.s{{seed}}.tsv"
    wildcard_constraints:
        scheme=naming.FIELDS["scheme"],
    conda:
        "../../envs/diffunlearn.yaml"
    threads: config["train"]["threads"]
    resources:
        **rule_resources("train", processes=TRAIN_PROCESSES),
    params:
        train=lambda wc: training_params(parallel=True, train=speedup_train_config(wc.scheme)),
        model=config["model"],
        diffusion=config["diffusion"],
        device=config["device"],
    script:
        "../scripts/train.py"


rule speedup:
    input:
        metrics=lambda wc: [
            f"{R}/metrics/{speedup_extractor()}/{m}/step{s}.json"
            for m, s in evaluated_checkpoints()
            if naming.parse(m).kind in ("original", "speedup")
        ],
    output:
        table=f"{R}/report/speedup.csv",
        by_step=f"{R}/report/speedup_fid_vs_step.png",
        by_seconds=f"{R}/report/fid_vs_seconds.png",
    log:
        f"{R}/logs/speedup.log",
    benchmark:
        f"{R}/benchmarks/speedup.tsv"
    conda:
        "../../envs/diffunlearn.yaml"
    threads: 1
    resources:
        **rule_resources("default"),
    params:
        bootstrap=config["speedup"]["bootstrap"],
    script:
        "../scripts/speedup.py"
