"""report: evaluation_results.csv, best_scores.csv, FID / IS vs step plots, sample grids per family."""
from diffunlearn.warm_start import run_warm

run_warm()  # where a warm process is available, a fork of it runs this job (diffunlearn.warm_start)

import numpy as np

from diffunlearn.grid import image_grid, save_png
from diffunlearn.report import (
    best_scores,
    evaluation_table,
    klom_table,
    load_records,
    plot_cost_vs_klom,
    plot_klom_per_method,
    plot_metric_vs_step,
)
from diffunlearn.snakemake_io import JobLog

log = JobLog(snakemake)
out = snakemake.output
records = load_records(snakemake.input.metrics)
evaluation_table(records).to_csv(out.results, index=False)
best_scores(records).to_csv(out.best, index=False)
plot_metric_vs_step(records, "fid", "FID", out.fid)
plot_metric_vs_step(records, "is_mean", "Inception Score", out.is_)
for i, samples_path in enumerate(snakemake.input.grids):  # one per family (params.families), in order
    with np.load(samples_path, allow_pickle=False) as z:
        grid = image_grid(z["images"][:64])
    save_png(snakemake.output[i], grid, upscale=max(1, 256 // grid.shape[0]))
if snakemake.input.klom:
    table = klom_table(snakemake.input.klom)
    table.to_csv(out.klom_csv, index=False)
    plot_klom_per_method(table, out.klom_plot)
    plot_cost_vs_klom(table, out.cost_plot)
log(f"report written from {len(records)} metric records")
