rule prepare_data:
    output:
        data=f"{R}/data/dataset.npz",
        info=f"{R}/data/dataset.json",
    log:
        f"{R}/logs/prepare_data.log",
    benchmark:
        f"{R}/benchmarks/prepare_data.tsv"
    conda:
        "../../envs/diffunlearn.yaml"
    threads: 1
    resources:
        **rule_resources("default"),
    params:
        data=config["data"],
    script:
        "../scripts/prepare_data.py"


rule make_forget_sets:
    input:
        data=rules.prepare_data.output.data,
    output:
        f"{R}/forget_sets/{{forget}}.json",
    log:
        f"{R}/logs/make_forget_sets/{{forget}}.log",
    benchmark:
        f"{R}/benchmarks/make_forget_sets/{{forget}}.tsv"
    conda:
        "../../envs/diffunlearn.yaml"
    threads: 1
    resources:
        **rule_resources("default"),
    params:
        definition=lambda wc: FORGET[wc.forget],
    script:
        "../scripts/make_forget_sets.py"
