"""train_classifier: the offline feature extractor, fitted once per data set on its labels."""
from diffunlearn.warm_start import run_warm

run_warm()  # where a warm process is available, a fork of it runs this job (diffunlearn.warm_start)

from diffunlearn.data import load_dataset
from diffunlearn.metrics.classifier import save_classifier, train_classifier
from diffunlearn.snakemake_io import JobLog, job_device

log = JobLog(snakemake)
d = load_dataset(snakemake.input.data)
model, info = train_classifier(d["train_images"], d["train_labels"], d["val_images"], d["val_labels"],
                               snakemake.params.classifier, device=job_device(snakemake.params.device), log=log)
log(f"validation accuracy {info['validation_accuracy']:.4f}")
save_classifier(snakemake.output[0], model, info)
