"""train.num_processes: data-parallel training inside one job (accelerate DDP; gloo on the CPU)."""
import json
import subprocess
import sys
import textwrap

import numpy as np
import torch
from safetensors.torch import load_file

from diffunlearn.config import validate_config

from conftest import ROOT, tiny_config

SCRIPT = textwrap.dedent("""
    import json, sys, torch
    torch.set_num_threads(2)
    sys.path.insert(0, {src!r})
    from diffunlearn.data import load_digits_source
    from diffunlearn.train import TrainRun, train_data_parallel
    cfg = json.loads({cfg!r})
    logged = []
    run = TrainRun(out_dir={out!r}, sources={{"train": load_digits_source()[0][:120]}}, train_cfg=cfg["train"],
                   model_cfg=cfg["model"], diffusion_cfg=cfg["diffusion"], seed=5, device="cpu")
    summary = train_data_parallel(run, {n}, log=logged.append)
    print(json.dumps({{"summary": summary, "logged": logged}}))
""")


def _train(out, num_processes):
    cfg = validate_config(tiny_config("r"))
    cfg["train"].update(steps=4, checkpoint_every=2, log_every=1, batch_size=8, num_processes=num_processes)
    code = SCRIPT.format(src=str(ROOT / "src"), cfg=json.dumps(cfg), out=str(out), n=num_processes)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _files(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def test_two_processes_on_cpu_write_the_same_layout_and_match_one_process(tmp_path):
    one = _train(tmp_path / "one", 1)
    two = _train(tmp_path / "two", 2)
    # Same checkpoint layout, published by the main process only; no resume/ left behind.
    assert _files(tmp_path / "two") == _files(tmp_path / "one")
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == ["checkpoint-2", "checkpoint-4"]
    state = json.loads((tmp_path / "two" / "checkpoint-4" / "training_state" / "state.json").read_text())
    # The global batch is train.batch_size (2 processes x 4 examples), so as many examples as one process saw.
    assert state["step"] == 4 and state["num_processes"] == 2
    assert state["examples_seen"] == one["summary"]["examples_seen"] == 4 * 8
    losses = [loss for _, loss in state["loss_log"]]
    assert len(losses) == 4 and all(np.isfinite(losses))
    assert any("data parallel: 2 processes, 4 examples each" in m for m in two["logged"])
    # The same examples, flips, timesteps and noise per step, gradients averaged over the processes: the
    # result equals the single-process run up to float summation order.
    ref = json.loads((tmp_path / "one" / "checkpoint-4" / "training_state" / "state.json").read_text())
    np.testing.assert_allclose(losses, [loss for _, loss in ref["loss_log"]], rtol=1e-4)
    for name in ("unet/diffusion_pytorch_model.safetensors", "training_state/raw.safetensors"):
        a = load_file(tmp_path / "two" / "checkpoint-4" / name)
        b = load_file(tmp_path / "one" / "checkpoint-4" / name)
        assert a.keys() == b.keys()
        for k in a:
            torch.testing.assert_close(a[k], b[k], rtol=1e-3, atol=1e-5, msg=f"{name}:{k}")
    # The checkpoint loads as a diffusers UNet.
    from diffunlearn.checkpoint import load_ema_unet

    unet = load_ema_unet(tmp_path / "two" / "checkpoint-4")
    assert sum(p.numel() for p in unet.parameters()) > 0
