"""The FID / IS plots: unlearned models on their own panel at their unlearning steps, and a log axis when one
family's values dwarf the others' (read back from the matplotlib figure, not from pixels); and
`snakemake --report` on the finished tiny run: a page with the front text, every plot and every table."""
import base64
import json
import re

import numpy as np
import pandas as pd
import pytest

from diffunlearn.report import metric_vs_step_figure, plot_metric_vs_step, use_log_scale

from conftest import run_snakemake


def _records(ga_fid):
    rows = []
    for seed in (0, 1):
        for step, fid in ((100, 60.0), (200, 25.0), (300, 15.0)):
            rows.append(dict(model=f"original.s{seed}", step=step, fid=fid + seed))
            rows.append(dict(model=f"oracle.rand.s{seed}", step=step, fid=fid + 2 + seed))
        rows.append(dict(model=f"unlearn.ga.rand.s{seed}", step=10, fid=ga_fid + seed))
        rows.append(dict(model=f"unlearn.gd.rand.s{seed}", step=30, fid=18.0 + seed))
    r = pd.DataFrame(rows)
    r["family"] = r["model"].str.rsplit(".s", n=1).str[0]
    r["seed"] = r["model"].str.rsplit(".s", n=1).str[1].astype(int)
    r["feature_extractor"] = "classifier"
    return r


def test_log_scale_only_when_values_span_more_than_ten_times():
    assert use_log_scale([15.0, 18.0, 928.0])
    assert not use_log_scale([15.0, 18.0, 60.0])
    assert not use_log_scale([0.0, 5.0, 900.0])  # a log axis cannot show 0
    assert not use_log_scale([np.nan, 3.0, 4.0])


def test_unlearned_models_get_their_own_panel_at_their_unlearning_steps():
    import matplotlib.pyplot as plt

    fig = metric_vs_step_figure(_records(ga_fid=928.0), "fid", "FID")
    training, unlearning = fig.axes
    assert training.get_yscale() == unlearning.get_yscale() == "log"
    curves = {line.get_label().split(" (")[0]: line for line in training.get_lines()}
    assert set(curves) == {"original", "oracle.rand"}
    assert list(curves["original"].get_xdata()) == [100, 200, 300]
    assert list(curves["original"].get_ydata()) == pytest.approx([60.5, 25.5, 15.5])  # mean over the 2 seeds
    points = {c.get_label().split(" (")[0]: c for c in unlearning.containers}
    assert set(points) == {"unlearn.ga.rand", "unlearn.gd.rand"}
    assert list(points["unlearn.ga.rand"].lines[0].get_xdata()) == [10]
    assert list(points["unlearn.ga.rand"].lines[0].get_ydata()) == pytest.approx([928.5])
    assert list(points["unlearn.gd.rand"].lines[0].get_xdata()) == [30]
    # reference lines: the original (start) and the oracle (target) at their final checkpoint, step 300
    refs = {line.get_label(): line.get_ydata()[0] for line in unlearning.get_lines() if "@ step" in line.get_label()}
    assert refs == {"original @ step 300 (start)": pytest.approx(15.5), "oracle.rand @ step 300 (target)": pytest.approx(17.5)}
    plt.close(fig)


def test_linear_axis_and_one_panel_without_unlearning(tmp_path):
    import matplotlib.pyplot as plt

    records = _records(ga_fid=20.0)
    fig = metric_vs_step_figure(records, "fid", "FID")
    assert [ax.get_yscale() for ax in fig.axes] == ["linear", "linear"]
    plt.close(fig)
    trained = records[~records["model"].str.startswith("unlearn")]
    fig = metric_vs_step_figure(trained, "fid", "FID")
    assert len(fig.axes) == 1
    plt.close(fig)
    plot_metric_vs_step(records, "fid", "FID", tmp_path / "fid.png")
    assert (tmp_path / "fid.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_snakemake_report_embeds_front_text_plots_and_tables(tiny_run):
    work, cfg = tiny_run
    page = work / "report.html"
    proc = run_snakemake(work, work / "config.yaml", "--report", str(page))
    assert page.exists(), proc.stdout[-3000:] + proc.stderr[-3000:]
    html = page.read_text()
    # every file the report rule marks for the report is in the page, byte for byte (embedded as base64)
    report = work / "results" / cfg["experiment"] / "report"
    files = ["evaluation_results.csv", "best_scores.csv", "fid_vs_step.png", "is_vs_step.png", "klom.csv",
             "klom_per_method.png", "cost_vs_klom.png"] + [f"samples/{f}.png" for f in
                                                             ("original", "oracle.rand", "oracle.cls1")]
    for name in files:
        assert base64.b64encode((report / name).read_bytes()).decode() in html, name
    for category in ("Evaluation", "Samples", "Unlearning"):
        assert f'"{category}"' in html, category
    # the front text (workflow/report/workflow.rst) with this run's settings
    desc = json.loads(re.search(r'<script id="workflow-desc">\s*var workflow_desc = (".*?");?\s*</script>', html,
                                re.S).group(1))
    text = " ".join(re.sub(r"<[^>]+>", "", desc).split())
    assert "diffunlearn: experiment t" in text
    assert "seeds 0; 4 steps of batch 16, a checkpoint every 2 steps" in text
    assert "rand (random, 20 examples), cls1 (class 1)" in text
    assert "do_nothing, ga, gd, sparsified" in text
    assert "What each section shows" in text and "Attribution" not in text
    assert '"results_dir": "' + str(work / "results") + '"' in text.replace("&quot;", '"')
