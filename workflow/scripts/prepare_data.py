from diffunlearn.warm_start import run_warm

run_warm()  # where a warm process is available, a fork of it runs this job (diffunlearn.warm_start)

from diffunlearn.data import prepare_dataset
from diffunlearn.io import save_npz_atomic, write_json_atomic
from diffunlearn.snakemake_io import JobLog

log = JobLog(snakemake)
arrays = prepare_dataset(snakemake.params.data, log=log)
log(f"train {arrays['train_images'].shape}, validation {arrays['val_images'].shape}")
save_npz_atomic(snakemake.output.data, **arrays)
write_json_atomic(snakemake.output.info, {
    "source": snakemake.params.data["source"],
    "num_train": int(len(arrays["train_images"])),
    "num_validation": int(len(arrays["val_images"])),
    "image_shape": list(arrays["train_images"].shape[1:]),
    "num_classes": int(arrays["train_labels"].max()) + 1,
    # imagefolder: label i is class_names[i] (sub-folder or labels_csv value; forget sets of kind class use i)
    "class_names": [str(c) for c in arrays["class_names"]] if "class_names" in arrays else None,
    "config": snakemake.params.data,
})
