"""evaluate: FID, IS and precision / recall of one checkpoint's samples with one feature extractor."""
from diffunlearn.warm_start import run_warm

run_warm()  # where a warm process is available, a fork of it runs this job (diffunlearn.warm_start)

import json
import time

import numpy as np

from diffunlearn import naming
from diffunlearn.evaluate import load_extractor, score_samples
from diffunlearn.io import write_json_atomic
from diffunlearn.snakemake_io import JobLog, job_device

log = JobLog(snakemake)
m = snakemake.params.metrics
wc = snakemake.wildcards
with np.load(snakemake.input.samples, allow_pickle=False) as z:
    samples, sampling_seconds = z["images"], float(z["seconds"])
    training = {k: z[k].item() for k in ("train_wall_seconds", "train_device") if k in z.files}
with np.load(snakemake.input.reference, allow_pickle=False) as z:
    reference = {k: z[k] for k in z.files}
extractor = load_extractor(wc.extractor, classifier_dir=snakemake.input.get("classifier"),
                           inception_weights=m["inception_weights"], device=job_device(snakemake.params.device))
if str(reference["weights_sha256"]) != extractor.weights_sha256:
    raise RuntimeError(f"{snakemake.input.reference} was computed with other {wc.extractor} weights; re-run reference_stats")
log.ready()
t0 = time.time()
scores = score_samples(extractor, samples, reference, batch_size=m["batch_size"], is_splits=m["is_splits"], pr_k=m["pr_k"])
record = {"model": wc.model, "step": int(wc.step), "family": naming.family(wc.model), "seed": naming.seed(wc.model), **scores,
          "feature_extractor": wc.extractor, "weights_sha256": extractor.weights_sha256,
          "weights_path": str(extractor.weights_path), "reference": str(reference["reference"]),
          "train_wall_seconds": training.get("train_wall_seconds"), "train_device": training.get("train_device"),
          "sampling_seconds": sampling_seconds, "evaluation_seconds": time.time() - t0}
log(json.dumps(record))
write_json_atomic(snakemake.output[0], record)
