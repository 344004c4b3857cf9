import os
import sys

sys.path.insert(0, os.path.join(workflow.basedir, "src"))  # works without `pip install -e .` too

from snakemake.exceptions import WorkflowError

from diffunlearn.config import ConfigError, checkpoint_steps, validate_config, load_schema

try:
    validate_config(config, load_schema(os.path.join(workflow.basedir, "workflow", "schemas", "config.schema.yaml")))
except ConfigError as exc:
    raise WorkflowError(str(exc)) from None

R = os.path.join(config["results_dir"], config["experiment"])
SEEDS = config["seeds"]
FORGET = {fs["id"]: fs for fs in config["forget_sets"]}
EXTRACTORS = config["metrics"]["feature_extractors"]
TRAIN_STEPS = checkpoint_steps(config["train"])


wildcard_constraints:
    seed=r"\d+",
    step=r"\d+",
    forget=r"[A-Za-z0-9_-]+",
    model=r"[A-Za-z0-9_.-]+",
    extractor=r"classifier|inception",


def rule_resources(family):
    """Resources of a rule family: config resources.<family> over resources.default."""
    res = dict(config["resources"]["default"])
    res.update({k: v for k, v in config["resources"].get(family, {}).items() if v is not None})
    out = {"mem_mb": res["mem_mb"], "runtime": res["runtime"], "gpu": res["gpu"], "cpus_per_task": res["cpus_per_task"]}
    if res.get("gpu_model"):
        out["gpu_model"] = res["gpu_model"]
    if res.get("slurm_partition"):
        out["slurm_partition"] = res["slurm_partition"]
    return out


def training_params():
    t = {k: v for k, v in config["train"].items() if k != "threads"}
    return t


# ---------------------------------------------------------------- models and their checkpoints
# A model id names a trained (or unlearned) network; its checkpoints live in R/models/<model>/checkpoint-<step>.


def trained_models():
    models = [f"original.s{s}" for s in SEEDS]
    models += [f"oracle.{f}.s{s}" for f in FORGET for s in SEEDS]
    return models


def model_family(model):
    """'original', 'oracle.<forget>' or 'unlearn.<method>.<forget>': the model id without its seed."""
    return model.rsplit(".s", 1)[0]


def model_seed(model):
    return int(model.rsplit(".s", 1)[1])


def model_steps(model):
    return TRAIN_STEPS


def evaluated_checkpoints():
    return [(m, s) for m in trained_models() for s in model_steps(m)]


def metric_files():
    return [f"{R}/metrics/{e}/{m}/step{s}.json" for e in EXTRACTORS for m, s in evaluated_checkpoints()]


def families():
    seen = []
    for m in trained_models():
        if model_family(m) not in seen:
            seen.append(model_family(m))
    return seen


def family_representatives():
    """The first-seed model of each family, whose last checkpoint's samples make the family's grid."""
    return [next(m for m in trained_models() if model_family(m) == fam) for fam in families()]


def report_outputs():
    return [
        f"{R}/report/evaluation_results.csv",
        f"{R}/report/best_scores.csv",
        f"{R}/report/fid_vs_step.png",
        f"{R}/report/is_vs_step.png",
    ] + [f"{R}/report/samples/{fam}.png" for fam in families()]
