import os
import sys

# The package is importable in this process and in every job (also in conda environments) without installing it.
sys.path.insert(0, os.path.join(workflow.basedir, "src"))

from snakemake.exceptions import WorkflowError

from diffunlearn import naming, speed
from diffunlearn.choice import run_settings
from diffunlearn.config import ConfigError, checkpoint_steps, export_pythonpath, validate_config, load_schema
from diffunlearn.seeding import model_rng_seed
from diffunlearn.weighting import job_params

export_pythonpath(os.path.join(workflow.basedir, "src"))

try:
    validate_config(config, load_schema(os.path.join(workflow.basedir, "workflow", "schemas", "config.schema.yaml")))
except ConfigError as exc:
    raise WorkflowError(str(exc)) from None

R = os.path.join(config["results_dir"], config["experiment"])
SEEDS = config["seeds"]
_evaluate_seeds = config["sampling"].get("evaluate_seeds")
EVALUATE_SEEDS = set(SEEDS if _evaluate_seeds is None else _evaluate_seeds)
FORGET = {fs["id"]: fs for fs in config["forget_sets"]}
EXTRACTORS = config["metrics"]["feature_extractors"]
TRAIN_STEPS = checkpoint_steps(config["train"])
UNLEARN = config["unlearning"]
METHODS = UNLEARN["methods"]
UNLEARN_FORGET = UNLEARN["forget_sets"] if UNLEARN["forget_sets"] is not None else list(FORGET)
ATTR = config["attribution"]
# Latent diffusion (latents.smk): the models train on VQ-VAE latents of the prepared images, and sampling
# decodes with the VQ-VAE copy written beside them. MODEL_DATA is what training, unlearning and margins read.
LATENTS = config["latents"]
MODEL_DATA = f"{R}/latents/dataset.npz" if LATENTS["enabled"] else f"{R}/data/dataset.npz"
LATENT_DECODER = {"vqvae": f"{R}/latents/dataset.vqvae"} if LATENTS["enabled"] else {}


def _scales_with_attempt():
    """Whether mem_mb / runtime must grow with the attempt: only where a scheduler enforces them and retries
    jobs, i.e. on SLURM, recognised by its account (profiles/slurm sets default-resources slurm_account; the
    plugin needs it). Elsewhere (local runs, workstations, dry-runs) the values are static: Snakemake does
    not kill a local job for its memory or time, and two per-job resource functions are about 8 % of the
    planning work of a 40 000-job DAG (BENCHMARKS.md)."""
    default = workflow.resource_settings.default_resources
    try:
        return default is not None and default.get("slurm_account") is not None
    except (AttributeError, KeyError, TypeError):
        return True  # an unknown form: keep the scaling rather than lose it


SCALE_WITH_ATTEMPT = _scales_with_attempt()


def rule_resources(family, processes=1):
    """Resources of one family of rules (config resources.<family>), for Snakemake and the SLURM profile.
    processes: GPUs per job are resources.<family>.gpu times this (data-parallel training, train.num_processes)."""
    res = config["resources"][family]
    # memory and time grow with the attempt on SLURM, so a job retried after an OOM / timeout kill asks for more
    scaled = SCALE_WITH_ATTEMPT
    out = {
        "mem_mb": (lambda wc, attempt: res["mem_mb"] * attempt) if scaled else res["mem_mb"],
        "runtime": (lambda wc, attempt: res["runtime"] * attempt) if scaled else res["runtime"],
        "gpu": res["gpu"] * processes,
        "cpus_per_task": res["cpus_per_task"],
    }
    if res["gpu_model"]:
        out["gpu_model"] = res["gpu_model"]
    if res["slurm_partition"]:
        out["slurm_partition"] = res["slurm_partition"]
    return out


TRAIN_PROCESSES = config["train"]["num_processes"]


def training_params(parallel=False, train=None):
    """The train config as job params. num_processes only for the data-parallel training rules (parallel=True)
    and only when above 1, so that its default leaves the params, and so existing results, as they were.
    train.timesteps / train.loss_weighting: left out when uniform (the default), resolved with every parameter
    of their scheme otherwise (diffunlearn.weighting.job_params)."""
    train = speed.job_params("train", train or config["train"])
    t = job_params({k: v for k, v in train.items() if k not in ("threads", "num_processes")})
    if parallel and TRAIN_PROCESSES > 1:
        t["num_processes"] = TRAIN_PROCESSES
    return t


# ---------------------------------------------------------------- models and their checkpoints
# A model id names a trained (or unlearned) network; its checkpoints live in R/models/<model>/checkpoint-<step>.


# Model names and their kinds: diffunlearn.naming. MODELS: the rules' output patterns of each kind of model.
MODELS = {kind: f"{R}/models/{template}" for kind, template in naming.TEMPLATES.items()}


def trained_models():
    models = [naming.original(s) for s in SEEDS]
    models += [naming.oracle(f, s) for f in FORGET for s in SEEDS]
    return models


KLOM_EXTRA = config["klom"]["reference"] == "extra"


def floor_oracles(forget):
    """klom.reference extra: the second, independent set of N oracles of a forget set (only their margins are used)."""
    return [naming.oracle2(forget, s) for s in SEEDS] if KLOM_EXTRA else []


unlearned_model = naming.unlearned


def unlearned_models():
    """Models created by unlearning jobs (sampled and evaluated at their final checkpoint)."""
    out = []
    for m in METHODS:
        if m in naming.FINE_TUNING_METHODS:
            out += [unlearned_model(m, f, s) for f in UNLEARN_FORGET for s in SEEDS]
    if "prune_fine_tune" in METHODS:
        out += [naming.pruned(s) for s in SEEDS]
    return out


# The training speed-up study (speedup.smk): one model per scheme and seed, beside the originals (its baseline).
SPEEDUP = config["speedup"]["schemes"]


def speedup_models():
    return [naming.speedup(name, s) for name in SPEEDUP for s in SEEDS]


# Preference fine-tuning (dpo.smk): one model dpo.<run>.s<k> per run of dpo.runs and seed of dpo.seeds.
DPO = config["dpo"]
DPO_SEEDS = (DPO["seeds"] if DPO["seeds"] is not None else SEEDS[:1]) if DPO["runs"] else []


def dpo_models():
    return [naming.dpo(r["name"], s) for r in DPO["runs"] for s in DPO_SEEDS]


def all_models():
    return trained_models() + unlearned_models() + speedup_models() + dpo_models()


model_method, model_family, model_seed = naming.method, naming.family, naming.seed


def model_steps(model):
    kind = naming.parse(model).kind
    if kind == "init":
        return [0]
    if kind == "attr":
        return [ATTR["sparsified"]["steps"] if model_method(model) == "sparsified" else config["train"]["steps"]]
    if kind == "dpo":
        return [run_settings(DPO, naming.parse(model).name)["steps"]]
    method = model_method(model)
    return [UNLEARN[method]["steps"]] if method else TRAIN_STEPS


def cost_file(model):
    fine_tuned = model_method(model) or naming.parse(model).kind == "dpo"  # fine-tuning runs: cost.<step>.json
    return f"{R}/models/{model}/cost.{model_steps(model)[-1]}.json" if fine_tuned else f"{R}/models/{model}/cost.json"


def final_checkpoint(model):
    return f"{R}/models/{model}/checkpoint-{model_steps(model)[-1]}"


def evaluated_models():
    """Models that are sampled and scored: those of sampling.evaluate_seeds (every seed when unset)."""
    return [m for m in all_models() if model_seed(m) in EVALUATE_SEEDS]


def evaluated_checkpoints():
    return [(m, s) for m in evaluated_models() for s in model_steps(m)]


def metric_files():
    return [f"{R}/metrics/{e}/{m}/step{s}.json" for e in EXTRACTORS for m, s in evaluated_checkpoints()]


def families():
    seen = []
    for m in evaluated_models():
        if model_family(m) not in seen:
            seen.append(model_family(m))
    return seen


def family_representatives():
    """The first-seed model of each family, whose last checkpoint's samples make the family's grid."""
    return [next(m for m in evaluated_models() if model_family(m) == fam) for fam in families()]


def report_outputs():
    return (
        [
            f"{R}/report/evaluation_results.csv",
            f"{R}/report/best_scores.csv",
            f"{R}/report/fid_vs_step.png",
            f"{R}/report/is_vs_step.png",
        ]
        + [f"{R}/report/samples/{fam}.png" for fam in families()]
        + klom_report_outputs()
        + attribution_report_outputs()
        + speedup_report_outputs()
        + ([f"{R}/report/dpo.csv"] if DPO["runs"] else [])
    )


from diffunlearn.attribution.removal import num_subset_models  # noqa: E402


def attribution_models():
    ts = ATTR["train_seed"]
    n = num_subset_models(ATTR["estimators"], ATTR["removal"], ATTR["num_subsets"])  # per-estimator draws: a block each
    return [naming.attributed(m, naming.subset("masks", i), ts) for m in ATTR["methods"] for i in range(n)]


def attribution_endpoints():
    """The empty model (random initialisation) and the full model (the original) of the Shapley regression."""
    return [naming.init(ATTR["train_seed"]), naming.original(ATTR["train_seed"])]


def lds_models():
    return [
        naming.attributed("retrain", naming.subset("heldout", i), s)
        for i in range(ATTR["lds"]["num_subsets"])
        for s in ATTR["lds"]["seeds"]
    ]


def behaviour_inputs(models):
    """Metric records and margins a behaviour needs, for the given models (final checkpoints)."""
    needs_metrics = any(b != "margin" for b in ATTR["behaviours"])
    ext = EXTRACTORS[0]
    return {
        "metrics": [f"{R}/metrics/{ext}/{m}/step{model_steps(m)[-1]}.json" for m in models] if needs_metrics else [],
        "margins": [f"{R}/margins/{m}.npy" for m in models] if "margin" in ATTR["behaviours"] else [],
    }


def attribute_inputs(wc):
    models = attribution_models() + attribution_endpoints()
    return {
        **behaviour_inputs(models),
        "costs": [cost_file(m) for m in attribution_models()],
        "shared_costs": [cost_file(naming.pruned(ATTR["train_seed"]))] if "sparsified" in ATTR["methods"] else [],
    }


def attribution_report_outputs():
    if not ATTR["enabled"]:
        return []
    return [
        f"{R}/report/{name}"
        for name in (
            "attribution_scores.csv",
            "attribution_cost.csv",
            "attribution_top_bottom.png",
            "lds.csv",
            "lds_vs_subsets.png",
        )
    ]


def klom_summaries():
    return [f"{R}/klom/{m}.{f}.json" for m in METHODS for f in UNLEARN_FORGET]


def speedup_report_outputs():
    if not SPEEDUP:
        return []
    return [f"{R}/report/speedup.csv", f"{R}/report/fid_vs_seconds.png", f"{R}/report/speedup_fid_vs_step.png"]


def klom_report_outputs():
    if not METHODS:
        return []
    return [f"{R}/report/klom.csv", f"{R}/report/klom_per_method.png", f"{R}/report/cost_vs_klom.png"]


def unlearn_source(wc):
    """sparsified starts from the pruned-and-fine-tuned model, every other method from the original."""
    if wc.method == "sparsified":
        return final_checkpoint(naming.pruned(wc.seed))
    return final_checkpoint(naming.original(wc.seed))


def klom_inputs(wc):
    unlearned = [unlearned_model(wc.method, wc.forget, s) for s in SEEDS]
    if wc.method == "retrain" and KLOM_EXTRA:  # retrain = an independent set of oracles: the floor's own
        unlearned = floor_oracles(wc.forget)
    costs = {
        "do_nothing": [],
        "retrain": [cost_file(naming.oracle(wc.forget, s)) for s in SEEDS],
    }.get(wc.method, [cost_file(m) for m in unlearned])
    shared = [cost_file(naming.pruned(s)) for s in SEEDS] if wc.method == "sparsified" else []
    return {
        "unlearned": [f"{R}/margins/{m}.npy" for m in unlearned],
        "oracle": [f"{R}/margins/{naming.oracle(wc.forget, s)}.npy" for s in SEEDS],
        "floor_oracles": [f"{R}/margins/{m}.npy" for m in floor_oracles(wc.forget)],
        "forget": f"{R}/forget_sets/{wc.forget}.json",
        "info": rules.prepare_data.output.info,
        "costs": costs,
        "shared_costs": shared,
    }


def classifier_input(wc):
    return {"classifier": f"{R}/classifier"} if wc.extractor == "classifier" else {}


# evaluate / reference_stats read the classifier folder only for the classifier extractor. With one kind of
# extractor in the config that input is static (their extractor wildcard is constrained to the configured
# ones); only with both does it take the per-job function, which costs planning time on every job.
EXTRACTOR_WILDCARD = "|".join(EXTRACTORS)
if {"classifier", "inception"} <= set(EXTRACTORS):
    EXTRACTOR_INPUT = ([unpack(classifier_input)], {})
else:
    EXTRACTOR_INPUT = ([], {"classifier": f"{R}/classifier"} if "classifier" in EXTRACTORS else {})


# ---------------------------------------------------------------- speed-up study (speedup.smk)


def speedup_train_config(scheme):
    """config["train"] with the scheme's timesteps / loss_weighting (and batch_size, where it sets one) in place of
    the originals' ones."""
    t = {k: v for k, v in config["train"].items() if k not in ("timesteps", "loss_weighting")}
    return {**t, **SPEEDUP[scheme]}


def speedup_extractor():
    return config["speedup"]["feature_extractor"] or EXTRACTORS[0]


# ---------------------------------------------------------------- preference fine-tuning (dpo.smk)
CHOICE = DPO["choice_model"]


def preference_inputs(wc):
    out = {"reference": final_checkpoint(naming.original(wc.seed)), "data": rules.prepare_data.output.data}
    if CHOICE["kind"] == "classifier":
        out["classifier"] = f"{R}/classifier"
    if CHOICE["kind"] == "pairs":
        out["pairs_file"] = CHOICE["pairs_file"]
    return out


def dpo_report_inputs(wc):
    ext = EXTRACTORS[0]
    models = [naming.original(s) for s in DPO_SEEDS] + dpo_models()
    final = {m: model_steps(m)[-1] for m in models}
    out = {
        "samples": [f"{R}/samples/{m}/step{final[m]}/samples.npz" for m in models],
        "metrics": [f"{R}/metrics/{ext}/{m}/step{final[m]}.json" for m in models],
        "costs": [cost_file(m) for m in dpo_models()],
        "logs": [f"{R}/models/{m}/dpo_log.{final[m]}.json" for m in dpo_models()],
        "preferences": [f"{R}/preferences/s{s}/preferences.json" for s in DPO_SEEDS],
    }
    if CHOICE["kind"] == "classifier":
        out["classifier"] = f"{R}/classifier"
    return out
