"""The fast paths compute the same thing as the plain ones (CPU, fp32, same seed), so speed never changes results.

torch.compile runs with the aot_eager backend here (DIFFUNLEARN_COMPILE_BACKEND): the same dynamo graph capture
and autograd tracing as inductor, without minutes of C++ code generation on a 2-core machine.
"""
import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler

from diffunlearn.config import validate_config
from diffunlearn.data import load_digits_source, to_model_space, to_uint8
from diffunlearn.flops import cpu_peak_flops, gpu_peak_flops, mfu, train_step_flops
from diffunlearn.margins import compute_margins
from diffunlearn.models import build_scheduler, build_unet
from diffunlearn.sample import ddpm_coefficients, ddpm_step_, initial_noise, sample_images
from diffunlearn.speed import fast_path
from diffunlearn.train import TrainRun, run_training

from conftest import tiny_config

DIFFUSION = {"num_train_timesteps": 1000, "beta_schedule": "linear", "beta_start": 1e-4, "beta_end": 0.02}
MODEL = {"block_out_channels": [8, 16], "layers_per_block": 1, "norm_num_groups": 4, "attention_resolutions": [4],
         "dropout": 0.0}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny tensors: one thread is faster, and far faster when the 2 cores are shared with other jobs."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def aot_eager(monkeypatch):
    monkeypatch.setenv("DIFFUNLEARN_COMPILE_BACKEND", "aot_eager")
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def tiny_unet(seed=0):
    return build_unet(MODEL, 8, 1, seed=seed).eval()


class CheapDenoiser(torch.nn.Module):
    """Stands in for a UNet where a test runs 1000-step chains: one 3x3 convolution, and the timestep."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(1, 1, 3, padding=1)
        self.config = SimpleNamespace(in_channels=1, sample_size=8)

    def forward(self, sample, timestep):
        return SimpleNamespace(sample=self.conv(sample) + timestep.view(-1, 1, 1, 1) / 1000)


# ---------------------------------------------------------------- training


def _train(tmp_path, name, **switches):
    cfg = validate_config(tiny_config("r"))
    cfg["model"].update(MODEL)
    cfg["train"].update(steps=6, checkpoint_every=6, log_every=1, batch_size=16, lr=2e-3, warmup_steps=2, **switches)
    run = TrainRun(out_dir=str(tmp_path / name), sources={"train": load_digits_source()[0][:200]}, train_cfg=cfg["train"],
                   model_cfg=cfg["model"], diffusion_cfg=cfg["diffusion"], seed=4, device="cpu")
    run_training(run, log=lambda m: None)
    ckpt = tmp_path / name / "checkpoint-6"
    state = json.loads((ckpt / "training_state" / "state.json").read_text())
    from diffunlearn.checkpoint import load_ema_unet

    return state, load_ema_unet(ckpt)


def test_fast_and_plain_training_give_the_same_loss_curve(tmp_path, aot_eager):
    plain_state, plain_ema = _train(tmp_path, "plain", compile=False, channels_last=False, fused_adamw=False)
    fast_state, fast_ema = _train(tmp_path, "fast", compile=True, channels_last=True, fused_adamw=True)
    plain_loss = np.array(plain_state["loss_log"])
    fast_loss = np.array(fast_state["loss_log"])
    assert plain_loss.shape == fast_loss.shape == (6, 2)
    np.testing.assert_allclose(fast_loss, plain_loss, rtol=1e-4, atol=1e-6)
    assert len(np.unique(plain_loss[:, 1])) == 6  # a real curve, not a constant
    for (name, a), (_, b) in zip(plain_ema.state_dict().items(), fast_ema.state_dict().items()):
        if name.endswith("to_k.bias"):
            # softmax ignores a key bias: its gradient is zero up to rounding, which Adam normalises to steps
            # of size lr in directions set by the rounding, so it differs by more than float tolerance
            continue
        torch.testing.assert_close(b, a, rtol=1e-4, atol=2e-5, msg=name)
    assert fast_state["fast_path"] == {"compile": True, "channels_last": True, "fused_adamw": True}
    assert plain_state["fast_path"] == {"compile": False, "channels_last": False, "fused_adamw": False}
    # The fast path does not change the run's identity: a run may resume with other switches.
    assert fast_state["fingerprint"] == plain_state["fingerprint"]
    # FLOPs are recorded: one micro-batch per step here.
    flops = train_step_flops(tiny_unet(), (16, 1, 8, 8))
    assert plain_state["flops_per_step"] == plain_state["flops_per_micro_batch"] == flops
    assert plain_state["flops_done"] == 6 * flops
    assert plain_state["achieved_tflops"] > 0 and 0 < plain_state["mfu"] < 1


def test_speed_keys_leave_the_params_and_come_back_from_the_config():
    from diffunlearn.speed import SPEED_KEYS, job_params, with_speed_keys

    config = {"train": {"lr": 1e-3, "compile": True, "channels_last": False, "fused_adamw": "auto"}}
    params = job_params("train", config["train"])
    assert params == {"lr": 1e-3} and set(SPEED_KEYS["train"]).isdisjoint(params)
    assert with_speed_keys("train", params, config) == config["train"]
    assert with_speed_keys("sampling", {"num_samples": 4}, {}) == {"num_samples": 4}


def test_fast_path_defaults():
    assert fast_path({}, "cpu") == {"compile": False, "channels_last": False, "fused_adamw": True}
    assert fast_path({}, "cuda:0") == {"compile": True, "channels_last": True, "fused_adamw": True}
    assert fast_path({"compile": True, "fused_adamw": False}, "cpu") == {"compile": True, "channels_last": False, "fused_adamw": False}
    cfg = validate_config(tiny_config("r"))
    assert (cfg["train"]["compile"], cfg["train"]["channels_last"], cfg["train"]["fused_adamw"]) == ("auto",) * 3
    assert (cfg["sampling"]["compile"], cfg["sampling"]["cuda_graphs"], cfg["sampling"]["channels_last"]) == ("auto",) * 3


# ---------------------------------------------------------------- sampling


@pytest.mark.parametrize("num_inference_steps", [1000, 7])
def test_precomputed_ddpm_step_equals_scheduler_step(num_inference_steps):
    scheduler = build_scheduler(DIFFUSION)
    scheduler.set_timesteps(num_inference_steps)
    coefficients = ddpm_coefficients(scheduler)
    assert coefficients.timesteps == [int(t) for t in scheduler.timesteps]
    g = torch.Generator().manual_seed(0)
    steps = range(len(coefficients.timesteps))
    if num_inference_steps == 1000:
        steps = [0, 1, 2, 500, 997, 998, 999]  # the ends of the chain and its middle
    for i in steps:
        t = scheduler.timesteps[i]
        x = torch.randn(5, 3, 4, 4, generator=g) * 1.5
        eps = torch.randn(5, 3, 4, 4, generator=g)
        expected = scheduler.step(eps, t, x, generator=torch.Generator().manual_seed(i)).prev_sample
        noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(i))
        got = ddpm_step_(x.clone(), eps, coefficients, i, noise=noise, work=torch.empty_like(x))
        torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)
        assert torch.equal(got, expected), f"step {i} (t={int(t)}) differs from scheduler.step"


def _reference_samples(unet, scheduler, num_samples, steps, seed, batch_size):
    """The plain loop: diffusers' scheduler.step, noise as sample_images draws it. Float NCHW."""
    scheduler.set_timesteps(steps)
    shape = (unet.config.in_channels, unet.config.sample_size, unet.config.sample_size)
    out = []
    with torch.no_grad():
        for b in range(-(-num_samples // batch_size)):
            n = min(batch_size, num_samples - b * batch_size)
            x = initial_noise(n, shape, seed, start=b * batch_size)
            g = torch.Generator().manual_seed(seed * 7_777_777 + b)
            for t in scheduler.timesteps:
                x = scheduler.step(unet(x, t.expand(n)).sample, t, x, generator=g).prev_sample
            out.append(x)
    return torch.cat(out)


@pytest.mark.parametrize("steps", [1000, 10])
def test_fast_sampler_equals_scheduler_step_sampling(steps):
    unet = CheapDenoiser() if steps == 1000 else tiny_unet(1)
    scheduler = build_scheduler(DIFFUSION)
    expected = _reference_samples(unet, scheduler, 5, steps, seed=2, batch_size=3)
    got = sample_images(unet, scheduler, 5, num_inference_steps=steps, seed=2, batch_size=3)
    assert np.array_equal(got, to_uint8(expected))
    assert len(np.unique(got)) > 10  # real images, not saturated


def test_sampler_switches_agree_with_the_plain_path(aot_eager):
    unet = tiny_unet(2)
    scheduler = build_scheduler(DIFFUSION)
    expected = _reference_samples(unet, scheduler, 5, 10, seed=0, batch_size=4)
    fast = sample_images(unet, scheduler, 5, num_inference_steps=10, seed=0, batch_size=4, compile=True, channels_last=True)
    # uint8 images of float results that agree to ~1e-6 can differ by one level where a value sits on a rounding edge
    assert np.abs(fast.astype(int) - to_uint8(expected).astype(int)).max() <= 1
    assert unet.conv_in.weight.is_contiguous()  # the caller's model is left as it was
    ddim = sample_images(unet, build_scheduler(DIFFUSION, kind="ddim"), 5, num_inference_steps=10, seed=0, batch_size=4,
                         compile=True)
    plain_ddim = sample_images(unet, build_scheduler(DIFFUSION, kind="ddim"), 5, num_inference_steps=10, seed=0, batch_size=4)
    assert np.abs(ddim.astype(int) - plain_ddim.astype(int)).max() <= 1


def test_fast_sampler_is_not_used_where_it_does_not_apply():
    from diffunlearn.sample import fast_ddpm_supported

    assert fast_ddpm_supported(build_scheduler(DIFFUSION))
    assert not fast_ddpm_supported(build_scheduler(DIFFUSION, kind="ddim"))
    assert not fast_ddpm_supported(DDPMScheduler(variance_type="learned_range"))
    assert not fast_ddpm_supported(DDPMScheduler(prediction_type="v_prediction"))


# ---------------------------------------------------------------- margins


def test_margins_switches_agree_with_the_plain_path(aot_eager):
    unet = tiny_unet(3)
    x0 = to_model_space(load_digits_source()[0][:10])
    indices = np.arange(10) * 3
    ac = build_scheduler(DIFFUSION).alphas_cumprod
    plain = compute_margins(unet, x0, indices, ac, num_pairs=3, seed=1, batch_size=8)
    fast = compute_margins(unet, x0, indices, ac, num_pairs=3, seed=1, batch_size=8, compile=True, channels_last=True)
    np.testing.assert_allclose(fast, plain, rtol=1e-5, atol=1e-7)
    assert unet.conv_in.weight.is_contiguous()


def test_margins_on_the_cpu_feed_the_model_cache_sized_slices(monkeypatch):
    import diffunlearn.margins as margins

    calls = []

    class Records(torch.nn.Module):
        def __init__(self, unet):
            super().__init__()
            self.unet = unet

        def forward(self, sample, timestep):
            calls.append(sample.shape[0])
            return self.unet(sample, timestep)

    unet = tiny_unet(4)
    x0 = to_model_space(load_digits_source()[0][:9])
    ac = build_scheduler(DIFFUSION).alphas_cumprod
    whole = compute_margins(Records(unet), x0, np.arange(9), ac, num_pairs=4, seed=0, batch_size=36)
    assert calls == [36]
    calls.clear()
    monkeypatch.setattr(margins, "CPU_FORWARD_PIXELS", 5 * 64)  # 5 rows of 8x8 per forward
    sliced = compute_margins(Records(unet), x0, np.arange(9), ac, num_pairs=4, seed=0, batch_size=36)
    assert calls == [5] * 7 + [1]
    np.testing.assert_allclose(sliced, whole, rtol=1e-5, atol=1e-7)


# ---------------------------------------------------------------- FLOPs and MFU


def test_train_step_flops_matches_the_counter_on_real_tensors():
    from torch.utils.flop_counter import FlopCounterMode

    model = {**MODEL, "attention_resolutions": []}
    unet = build_unet(model, 8, 1, seed=0)
    x = torch.randn(4, 1, 8, 8)
    with FlopCounterMode(display=False) as counter:
        torch.nn.functional.mse_loss(unet(x, torch.tensor([1, 2, 3, 4])).sample, x).backward()
    # the mid block's attention runs as one fused kernel on the CPU and as matmuls on the meta device
    attention = sum(v for k, v in counter.get_flop_counts()["Global"].items() if "attention" in str(k))
    assert train_step_flops(unet, (4, 1, 8, 8)) > 0
    assert abs(train_step_flops(unet, (4, 1, 8, 8)) - (counter.get_total_flops() - attention)) <= 0.05 * counter.get_total_flops()
    assert train_step_flops(unet, (8, 1, 8, 8)) == 2 * train_step_flops(unet, (4, 1, 8, 8))


def test_mfu_and_peaks():
    assert mfu(1e12, 2.0, 4e12) == 0.5
    assert mfu(1e12, 2.0, None) is None
    assert gpu_peak_flops("NVIDIA H100 80GB HBM3", "bf16") == 989e12
    assert gpu_peak_flops("NVIDIA H200", "bf16") == 989e12
    assert gpu_peak_flops("NVIDIA A100-SXM4-80GB", "bf16") == 312e12
    assert gpu_peak_flops("NVIDIA A10G", "bf16") == 125e12
    assert gpu_peak_flops("Some Future GPU", "bf16") is None
    assert cpu_peak_flops(threads=2, ghz=2.0, flops_per_cycle=32) == 128e9
    assert cpu_peak_flops() > 0


def test_forward_flops_of_a_convolution_equal_the_closed_form():
    """One 3x3 convolution (padding 1) costs 2 * B * H * W * C_out * C_in * 9 FLOPs; the time input is ignored."""
    from diffunlearn.flops import forward_flops

    class OneConv(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 5, 3, padding=1, bias=False)

        def forward(self, x, t):
            return self.conv(x)

    assert forward_flops(OneConv(), (4, 3, 6, 7)) == 2 * 4 * 6 * 7 * 5 * 3 * 9


def test_forward_flops_of_a_unet_scale_with_the_batch_and_are_a_third_of_a_training_step():
    from diffunlearn.flops import forward_flops

    unet = tiny_unet()
    one, four = forward_flops(unet, (1, 1, 8, 8)), forward_flops(unet, (4, 1, 8, 8))
    assert one > 0 and four == 4 * one
    # backward costs about two forwards (gradients of inputs and weights); the first layer needs no input gradient
    assert 2.5 * four < train_step_flops(unet, (4, 1, 8, 8)) <= 3 * four


def test_resolve_compile_auto_compiles_on_the_cpu_only_when_the_forwards_outlast_the_threshold(monkeypatch):
    from diffunlearn import speed
    from diffunlearn.flops import cpu_peak_flops, forward_flops

    unet = tiny_unet()
    assert speed.resolve_compile(True, "cpu") and not speed.resolve_compile(False, "cuda")
    assert speed.resolve_compile("auto", "cuda:0", unet, 1)
    assert not speed.resolve_compile("auto", "mps", unet, 10**12)
    # the estimate, computed here from its definition: forwards x FLOPs per image at half the CPU's peak
    seconds_per_forward = forward_flops(unet, (1, 1, 8, 8)) / (0.5 * cpu_peak_flops())
    assert speed.estimated_cpu_seconds(unet, 1000) == pytest.approx(1000 * seconds_per_forward)
    at_threshold = int(speed.CPU_COMPILE_PAYS_AFTER_S / seconds_per_forward)
    assert not speed.resolve_compile("auto", "cpu", unet, 128 * 100)  # the embedded default's sample job
    assert not speed.resolve_compile("auto", "cpu", unet, at_threshold - 10)
    assert speed.resolve_compile("auto", "cpu", unet, at_threshold + 10)
    monkeypatch.setattr(speed, "CPU_COMPILE_PAYS_AFTER_S", 0.0)
    assert speed.resolve_compile("auto", "cpu", unet, 1)
