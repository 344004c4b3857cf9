rule train_classifier:
    input:
        data=rules.prepare_data.output.data,
    output:
        directory(f"{R}/classifier"),
    log:
        f"{R}/logs/train_classifier.log",
    benchmark:
        f"{R}/benchmarks/train_classifier.tsv"
    conda:
        "../../envs/diffunlearn.yaml"
    threads: config["metrics"]["threads"]
    resources:
        **rule_resources("evaluate"),
    params:
        classifier=config["metrics"]["classifier"],
        device=config["device"],
    script:
        "../scripts/train_classifier.py"


rule reference_stats:
    input:
        *EXTRACTOR_INPUT[0],
        **EXTRACTOR_INPUT[1],
        data=rules.prepare_data.output.data,
    output:
        f"{R}/metrics/reference/{{extractor}}.npz",
    log:
        f"{R}/logs/reference_stats/{{extractor}}.log",
    benchmark:
        f"{R}/benchmarks/reference_stats/{{extractor}}.tsv"
    wildcard_constraints:
        extractor=EXTRACTOR_WILDCARD,
    conda:
        "../../envs/diffunlearn.yaml"
    threads: config["metrics"]["threads"]
    resources:
        **rule_resources("evaluate"),
    params:
        metrics={
            k: config["metrics"][k] for k in ("reference_split", "reference_size", "inception_weights", "batch_size")
        },
        device=config["device"],
    script:
        "../scripts/reference_stats.py"


rule evaluate:
    input:
        *EXTRACTOR_INPUT[0],
        **EXTRACTOR_INPUT[1],
        samples=f"{R}/samples/{{model}}/step{{step}}/samples.npz",
        reference=f"{R}/metrics/reference/{{extractor}}.npz",
    output:
        f"{R}/metrics/{{extractor}}/{{model}}/step{{step}}.json",
    log:
        f"{R}/logs/evaluate/{{extractor}}/{{model}}.step{{step}}.log",
    benchmark:
        f"{R}/benchmarks/evaluate/{{extractor}}/{{model}}.step{{step}}.tsv"
    wildcard_constraints:
        extractor=EXTRACTOR_WILDCARD,
    conda:
        "../../envs/diffunlearn.yaml"
    threads: config["metrics"]["threads"]
    resources:
        **rule_resources("evaluate"),
    params:
        metrics={k: config["metrics"][k] for k in ("inception_weights", "batch_size", "is_splits", "pr_k")},
        device=config["device"],
    script:
        "../scripts/evaluate.py"
