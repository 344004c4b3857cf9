"""speedup: report/speedup.csv and the FID-vs-step / FID-vs-seconds curves of the training speed-up study."""
from diffunlearn.warm_start import run_warm

run_warm()  # where a warm process is available, a fork of it runs this job (diffunlearn.warm_start)

from diffunlearn.report import load_records
from diffunlearn.snakemake_io import JobLog
from diffunlearn.speedup import plot_fid_curves, speedup_table, write_csv

log = JobLog(snakemake)
out = snakemake.output
records = load_records(snakemake.input.metrics)
table = speedup_table(records, bootstrap=snakemake.params.bootstrap)
write_csv(table, out.table)
plot_fid_curves(records, "step", out.by_step)
plot_fid_curves(records, "seconds", out.by_seconds)
log(f"speed-up table of {len(table)} families from {len(records)} metric records:\n{table.to_string(index=False)}")
