"""reference_stats: Frechet statistics (pytorch-fid .npz: mu, sigma) and precision / recall features of the reference split."""
from diffunlearn.warm_start import run_warm

run_warm()  # where a warm process is available, a fork of it runs this job (diffunlearn.warm_start)

from diffunlearn.data import load_dataset
from diffunlearn.evaluate import load_extractor, reference_statistics
from diffunlearn.io import save_npz_atomic
from diffunlearn.snakemake_io import JobLog, job_device

log = JobLog(snakemake)
m = snakemake.params.metrics
d = load_dataset(snakemake.input.data)
images = d["train_images"] if m["reference_split"] == "train" else d["val_images"]
if m["reference_size"]:
    images = images[: m["reference_size"]]
extractor = load_extractor(snakemake.wildcards.extractor, classifier_dir=snakemake.input.get("classifier"),
                           inception_weights=m["inception_weights"], device=job_device(snakemake.params.device))
log.ready()
ref = reference_statistics(extractor, images, m["batch_size"])
log(f"{snakemake.wildcards.extractor}: statistics of {int(ref['count'])} {m['reference_split']} images")
save_npz_atomic(snakemake.output[0], **ref, weights_sha256=extractor.weights_sha256,
                reference=f"{m['reference_split']} split ({int(ref['count'])} images)")
