# Preference fine-tuning (config dpo; docs/methods.md "Preference fine-tuning"): pairs of samples of the reference
# model judged by a choice model (once per seed, reused by every run), Diffusion-DPO / SFT fine-tuning of a copy of
# the reference against it (one model dpo.<run>.s<k> per run, sampled and scored like every model), and
# report/dpo.csv: win rate against the reference on the samples of sampling.seed, FID, IS, implicit accuracy, cost.
rule make_preferences:
    input:
        unpack(preference_inputs),
    output:
        pairs=f"{R}/preferences/s{{seed}}/pairs.npz",
        info=f"{R}/preferences/s{{seed}}/preferences.json",
    log:
        f"{R}/logs/make_preferences/s{{seed}}.log",
    benchmark:
        f"{R}/benchmarks/make_preferences/s{{seed}}.tsv"
    conda:
        "../../envs/diffunlearn.yaml"
    threads: DPO["threads"]
    resources:
        **rule_resources("sample"),
    params:
        choice=CHOICE,
        pairs={k: DPO[k] for k in ("num_pairs", "min_gap", "sample_seed")},
        sampling={k: config["sampling"][k] for k in ("scheduler", "num_inference_steps", "eta", "batch_size")},
        diffusion=config["diffusion"],
        device=config["device"],
    script:
        "../scripts/make_preferences.py"


rule train_dpo:
    input:
        pairs=f"{R}/preferences/s{{seed}}/pairs.npz",
        reference=lambda wc: final_checkpoint(naming.original(wc.seed)),
    output:
        checkpoint=directory(f"{MODELS['dpo']}/checkpoint-{{step}}"),
        cost=f"{MODELS['dpo']}/cost.{{step}}.json",
        log_json=f"{MODELS['dpo']}/dpo_log.{{step}}.json",
    log:
        f"{R}/logs/train_dpo/{{name}}.s{{seed}}.step{{step}}.log",
    benchmark:
        f"{R}/benchmarks/train_dpo/{{name}}.s{{seed}}.step{{step}}.tsv"
    wildcard_constraints:
        name=naming.FIELDS["name"],
    conda:
        "../../envs/diffunlearn.yaml"
    threads: config["train"]["threads"]
    resources:
        **rule_resources("train"),
    params:
        hp=lambda wc: run_settings(DPO, wc.name),
        train=training_params(),
        model=config["model"],
        diffusion=config["diffusion"],
        device=config["device"],
    script:
        "../scripts/train_dpo.py"


rule dpo_report:
    input:
        unpack(dpo_report_inputs),
    output:
        table=report(f"{R}/report/dpo.csv", category="Preference fine-tuning", caption="../report/dpo.rst"),
    log:
        f"{R}/logs/dpo_report.log",
    benchmark:
        f"{R}/benchmarks/dpo_report.tsv"
    conda:
        "../../envs/diffunlearn.yaml"
    threads: 1
    resources:
        **rule_resources("evaluate"),
    params:
        runs=[r["name"] for r in DPO["runs"]],
        seeds=DPO_SEEDS,
        choice=CHOICE,
        interval={k: DPO[k] for k in ("interval", "bootstrap")},
        device=config["device"],
    script:
        "../scripts/dpo_report.py"
