rule train_classifier:
    input:
        data=rules.prepare_data.output.data,
    output:
        directory(f"{R}/classifier"),
    params:
        classifier=config["metrics"]["classifier"],
        device=config["device"],
    log:
        f"{R}/logs/train_classifier.log",
    benchmark:
        f"{R}/benchmarks/train_classifier.tsv"
    threads: config["metrics"]["threads"]
    resources:
        **rule_resources("evaluate"),
    conda:
        "../../envs/diffunlearn.yaml"
    script:
        "../scripts/train_classifier.py"


rule reference_stats:
    input:
        *EXTRACTOR_INPUT[0],
        **EXTRACTOR_INPUT[1],
        data=rules.prepare_data.output.data,
    output:
        f"{R}/metrics/reference/{{extractor}}.npz",
    wildcard_constraints:
        extractor=EXTRACTOR_WILDCARD,
    params:
        metrics={k: config["metrics"][k] for k in ("reference_split", "reference_size", "inception_weights", "batch_size")},
        device=config["device"],
    log:
        f"{R}/logs/reference_stats/{{extractor}}.log",
    benchmark:
        f"{R}/benchmarks/reference_stats/{{extractor}}.tsv"
    threads: config["metrics"]["threads"]
    resources:
        **rule_resources("evaluate"),
    conda:
        "../../envs/diffunlearn.yaml"
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
    wildcard_constraints:
        extractor=EXTRACTOR_WILDCARD,
    params:
        metrics={k: config["metrics"][k] for k in ("inception_weights", "batch_size", "is_splits", "pr_k")},
        device=config["device"],
    log:
        f"{R}/logs/evaluate/{{extractor}}/{{model}}.step{{step}}.log",
    benchmark:
        f"{R}/benchmarks/evaluate/{{extractor}}/{{model}}.step{{step}}.tsv"
    threads: config["metrics"]["threads"]
    resources:
        **rule_resources("evaluate"),
    conda:
        "../../envs/diffunlearn.yaml"
    script:
        "../scripts/evaluate.py"
