# diffunlearn: train -> (unlearn) -> sample -> evaluate -> report, as one DAG.
# Kept cheap at import (it runs again in every cluster job): no torch here, only config validation.

# The embedded default, unless --configfile names a preset: presets are complete on their own and are
# not merged into the default (whose forget sets and methods would otherwise leak into them).
if not workflow.overwrite_configfiles:

    configfile: "config/config.yaml"


include: "workflow/rules/common.smk"


# The front text of `snakemake --report report.html`: the experiment, its settings, what each section shows.
report: "workflow/report/workflow.rst"


wildcard_constraints:
    seed=naming.FIELDS["seed"],
    step=r"\d+",
    forget=naming.FIELDS["forget"],
    model=naming.MODEL_WILDCARD,
    extractor=r"classifier|inception",
    method=naming.FIELDS["method"],


include: "workflow/rules/data.smk"
include: "workflow/rules/latents.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/unlearn.smk"
include: "workflow/rules/sample.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/attribution.smk"
include: "workflow/rules/speedup.smk"
include: "workflow/rules/dpo.smk"
include: "workflow/rules/report.smk"


rule all:
    default_target: True
    input:
        report_outputs(),
