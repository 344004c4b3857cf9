rule report:
    input:
        metrics=metric_files(),
        klom=klom_summaries(),
        grids=[f"{R}/samples/{m}/step{model_steps(m)[-1]}/samples.npz" for m in family_representatives()],
    output:
        *[
            report(f"{R}/report/samples/{fam}.png", category="Samples", caption="../report/samples.rst")
            for fam in families()
        ],
        **(
            {
                "klom_csv": report(f"{R}/report/klom.csv", category="Unlearning", caption="../report/klom.rst"),
                "klom_plot": report(
                    f"{R}/report/klom_per_method.png", category="Unlearning", caption="../report/klom_per_method.rst"
                ),
                "cost_plot": report(
                    f"{R}/report/cost_vs_klom.png", category="Unlearning", caption="../report/cost_vs_klom.rst"
                ),
            }
            if METHODS
            else {}
        ),
        results=report(
            f"{R}/report/evaluation_results.csv", category="Evaluation", caption="../report/evaluation_results.rst"
        ),
        best=report(f"{R}/report/best_scores.csv", category="Evaluation", caption="../report/best_scores.rst"),
        fid=report(f"{R}/report/fid_vs_step.png", category="Evaluation", caption="../report/fid_vs_step.rst"),
        is_=report(f"{R}/report/is_vs_step.png", category="Evaluation", caption="../report/is_vs_step.rst"),
    log:
        f"{R}/logs/report.log",
    benchmark:
        f"{R}/benchmarks/report.tsv"
    conda:
        "../../envs/diffunlearn.yaml"
    threads: 1
    resources:
        **rule_resources("default"),
    params:
        families=families(),
    script:
        "../scripts/report.py"
