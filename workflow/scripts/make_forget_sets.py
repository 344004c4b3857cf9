from diffunlearn.warm_start import run_warm

run_warm()  # where a warm process is available, a fork of it runs this job (diffunlearn.warm_start)

from diffunlearn.data import load_dataset, make_forget_set
from diffunlearn.io import write_json_atomic
from diffunlearn.snakemake_io import JobLog

log = JobLog(snakemake)
labels = load_dataset(snakemake.input.data)["train_labels"]
definition = snakemake.params.definition
indices = make_forget_set(definition, labels)
log(f"forget set {definition['id']}: {len(indices)} of {len(labels)} training examples")
write_json_atomic(snakemake.output[0], {"id": definition["id"], "definition": definition,
                                        "num_train": int(len(labels)), "size": int(len(indices)),
                                        "indices": indices.tolist()})
