"""Start-up cost of jobs: JobLog imports no torch and writes the lines benchmarks/bench_startup.py reads;
UNet2DModel is built without running the __init__ of diffusers' model-zoo packages, which still run on first use."""
import subprocess
import sys
import textwrap


def _run(code: str, **env) -> str:
    import os

    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          env={**os.environ, **env})
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_joblog_imports_no_torch_and_logs_ready_and_done(tmp_path):
    log = tmp_path / "job.log"
    out = _run(f"""
        import sys, types
        from diffunlearn.snakemake_io import JobLog
        job = JobLog(types.SimpleNamespace(log=[{str(log)!r}], threads=3, resources={{}}))
        job.ready()
        job.ready()
        import os
        print("torch" in sys.modules, os.environ["OMP_NUM_THREADS"], file=sys.__stdout__)
    """)
    assert out.split() == ["False", "3"]
    lines = log.read_text().splitlines()
    assert [line.split("] ")[1].split(":")[0] for line in lines] == ["started", "ready", "done"]
    sys.path.insert(0, "benchmarks")
    try:
        from bench_startup import parse_log
    finally:
        sys.path.remove("benchmarks")
    parsed = parse_log(log)
    assert parsed["startup"] >= 0 and parsed["work"] >= 0 and parsed["startup_cpu"] >= 0


def test_joblog_sets_torch_threads_when_torch_is_loaded(tmp_path):
    out = _run(f"""
        import sys, types, torch
        from diffunlearn.snakemake_io import JobLog
        JobLog(types.SimpleNamespace(log=[{str(tmp_path / 'j.log')!r}], threads=2, resources={{}}))
        print(torch.get_num_threads(), file=sys.__stdout__)
    """)
    assert out.strip() == "2"


def test_unet_class_defers_model_zoo_packages_until_asked():
    out = _run("""
        import sys
        from diffunlearn.models import unet_class, scheduler_class
        unet = unet_class()(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16), norm_num_groups=4,
                            layers_per_block=1, down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                            up_block_types=("AttnUpBlock2D", "UpBlock2D"))
        print("diffusers.models.unets.unet_2d_condition" in sys.modules, "peft" in sys.modules)
        import diffusers.models.transformers as transformers_package
        from diffusers import UNet2DConditionModel
        print(transformers_package.Transformer2DModel.__name__, UNet2DConditionModel.__name__)
        print(scheduler_class("ddim").__name__, type(unet).__name__)
    """)
    assert out.split() == ["False", "False", "Transformer2DModel", "UNet2DConditionModel", "DDIMScheduler", "UNet2DModel"]
