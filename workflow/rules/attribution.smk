rule draw_subsets:
    input:
        data=rules.prepare_data.output.data,
    output:
        f"{R}/attribution/subsets.npz",
    log:
        f"{R}/logs/draw_subsets.log",
    benchmark:
        f"{R}/benchmarks/draw_subsets.tsv"
    conda:
        "../../envs/diffunlearn.yaml"
    threads: 1
    resources:
        **rule_resources("default"),
    params:
        attribution={k: ATTR[k] for k in ("unit", "removal", "alpha", "num_subsets", "seed", "lds", "estimators")},
    script:
        "../scripts/draw_subsets.py"


rule init_model:
    input:
        data=MODEL_DATA,
    output:
        directory(f"{MODELS['init']}/checkpoint-0"),
    log:
        f"{R}/logs/init_model/s{{seed}}.log",
    benchmark:
        f"{R}/benchmarks/init_model/s{{seed}}.tsv"
    conda:
        "../../envs/diffunlearn.yaml"
    threads: 1
    resources:
        **rule_resources("default"),
    params:
        model=config["model"],
        diffusion=config["diffusion"],
    script:
        "../scripts/init_model.py"


rule train_subset:
    input:
        **({"source": final_checkpoint(naming.pruned(ATTR["train_seed"]))} if "sparsified" in ATTR["methods"] else {}),
        data=MODEL_DATA,
        subsets=rules.draw_subsets.output[0],
    output:
        checkpoint=directory(f"{MODELS['attr']}/checkpoint-{{step}}"),
        cost=f"{MODELS['attr']}/cost.{{step}}.json",
    log:
        f"{R}/logs/train_subset/{{method}}.{{subset}}.s{{seed}}.step{{step}}.log",
    benchmark:
        f"{R}/benchmarks/train_subset/{{method}}.{{subset}}.s{{seed}}.step{{step}}.tsv"
    wildcard_constraints:
        subset=naming.FIELDS["subset"],
    conda:
        "../../envs/diffunlearn.yaml"
    threads: config["train"]["threads"]
    resources:
        **rule_resources("train"),
    params:
        train=training_params(),
        hp=ATTR["sparsified"],
        model=config["model"],
        diffusion=config["diffusion"],
        device=config["device"],
    script:
        "../scripts/train_subset.py"


rule attribute:
    input:
        unpack(attribute_inputs),
        data=rules.prepare_data.output.data,
        info=rules.prepare_data.output.info,
        subsets=rules.draw_subsets.output[0],
    output:
        behaviours=f"{R}/attribution/behaviours.csv",
        scores=report(f"{R}/report/attribution_scores.csv", category="Attribution", caption="../report/attribution.rst"),
        cost=report(f"{R}/report/attribution_cost.csv", category="Attribution", caption="../report/attribution.rst"),
        picture=report(
            f"{R}/report/attribution_top_bottom.png", category="Attribution", caption="../report/attribution.rst"
        ),
    log:
        f"{R}/logs/attribute.log",
    benchmark:
        f"{R}/benchmarks/attribute.tsv"
    conda:
        "../../envs/diffunlearn.yaml"
    threads: 1
    resources:
        **rule_resources("default"),
    params:
        attribution=ATTR,
        models=attribution_models() + attribution_endpoints(),
        empty_model=attribution_endpoints()[0],
        full_model=attribution_endpoints()[1],
    script:
        "../scripts/attribute.py"


rule lds:
    input:
        unpack(lambda wc: behaviour_inputs(lds_models())),
        info=rules.prepare_data.output.info,
        subsets=rules.draw_subsets.output[0],
        behaviours=rules.attribute.output.behaviours,
    output:
        table=report(f"{R}/report/lds.csv", category="Attribution", caption="../report/lds.rst"),
        plot=report(f"{R}/report/lds_vs_subsets.png", category="Attribution", caption="../report/lds.rst"),
    log:
        f"{R}/logs/lds.log",
    benchmark:
        f"{R}/benchmarks/lds.tsv"
    conda:
        "../../envs/diffunlearn.yaml"
    threads: 1
    resources:
        **rule_resources("default"),
    params:
        attribution=ATTR,
        heldout_models=lds_models(),
        empty_model=attribution_endpoints()[0],
        full_model=attribution_endpoints()[1],
    script:
        "../scripts/lds.py"
