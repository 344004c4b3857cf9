"""draw_subsets: removal-distribution draws over units (and the held-out datamodel subsets for LDS)."""
from diffunlearn.warm_start import run_warm

run_warm()  # where a warm process is available, a fork of it runs this job (diffunlearn.warm_start)

from diffunlearn.attribution.experiment import units_of
from diffunlearn.attribution.removal import draw_for_estimators, draw_subsets
from diffunlearn.data import load_dataset
from diffunlearn.io import save_npz_atomic
from diffunlearn.snakemake_io import JobLog

log = JobLog(snakemake)
a = snakemake.params.attribution
labels = load_dataset(snakemake.input.data)["train_labels"]
unit_of_example, names = units_of(a["unit"], labels)
n_units = len(names)
num = a["num_subsets"]  # loo: row i leaves out unit i mod n_units
# removal null: a block of num draws per estimator, each from its own distribution; else one shared set
masks = draw_for_estimators(a["estimators"], a["removal"], n_units, num, a["seed"], alpha=a["alpha"])
heldout = draw_subsets("datamodel", n_units, a["lds"]["num_subsets"], a["seed"] + 1_000_003, alpha=a["lds"]["alpha"])
log(f"{a['removal'] or 'per-estimator draws'}: {len(masks)} subsets of {n_units} units; {len(heldout)} held-out datamodel subsets")
save_npz_atomic(snakemake.output[0], masks=masks, heldout=heldout, unit_of_example=unit_of_example,
                unit_names=__import__("numpy").array(names, dtype=str))
