"""Latent diffusion: VQ-VAE latents precomputed once (precompute_latents), models trained on them, samples
decoded to pixels and scored; what a change re-plans; the CelebA-HQ preset plans on a generated folder."""
import copy
import json
import re
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from conftest import ROOT, planned_jobs, run_snakemake, tiny_config, write_config


def tiny_vqvae(seed=0):
    """A randomly initialised diffusers VQModel of a few tens of thousands of parameters (16x16 -> 8x8x4)."""
    import torch
    from diffusers import VQModel

    torch.manual_seed(seed)
    return VQModel(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
                   up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 16), layers_per_block=1,
                   latent_channels=4, num_vq_embeddings=32, norm_num_groups=4, sample_size=16)


def save_vqvae(folder, seed=0) -> Path:
    """save_pretrained into <folder>/vqvae, the hub repository's layout."""
    tiny_vqvae(seed).save_pretrained(Path(folder) / "vqvae")
    return Path(folder)


def image_folder(root, n_per_class=12, classes=("cat", "dog"), size=16) -> Path:
    """Nested class folders of small coloured images, mixed formats and sizes."""
    rng = np.random.default_rng(0)
    root = Path(root)
    for c, name in enumerate(classes):
        for i in range(n_per_class):
            sub = root / name / ("a" if i % 2 else "b")
            sub.mkdir(parents=True, exist_ok=True)
            w, h = size + (i % 3) * 4, size + (i % 2) * 6
            base = np.zeros((h, w, 3), np.uint8)
            base[..., c] = 200
            arr = (base + rng.integers(0, 55, (h, w, 3))).astype(np.uint8)
            Image.fromarray(arr).save(sub / f"{i}.{'png' if i % 3 else 'jpg'}")
    return root


# ---------------------------------------------------------------- the package


def test_vqvae_is_tiny_and_loads_from_a_local_folder(tmp_path):
    from diffunlearn.latents import load_vqvae, weights_sha256

    save_vqvae(tmp_path / "vq")
    model = tiny_vqvae()
    assert 10_000 < sum(p.numel() for p in model.parameters()) < 100_000
    for source, sub in ((tmp_path / "vq", "vqvae"), (tmp_path / "vq" / "vqvae", "vqvae"), (tmp_path / "vq" / "vqvae", None)):
        loaded = load_vqvae(str(source), sub)
        assert weights_sha256(loaded) == weights_sha256(model)
    assert weights_sha256(tiny_vqvae(seed=1)) != weights_sha256(model)


def test_missing_vqvae_is_a_one_line_error(tmp_path):
    from diffunlearn.latents import LatentError, load_vqvae

    with pytest.raises(LatentError, match=r"CompVis/ldm-celebahq-256.*cache.*huggingface-cli download.*latents.vqvae") as err:
        load_vqvae("CompVis/ldm-celebahq-256", "vqvae", local_files_only=True)
    assert "\n" not in str(err.value)
    with pytest.raises(LatentError, match="not found"):
        load_vqvae(str(tmp_path / "nowhere" / "vq"), "vqvae")
    (tmp_path / "empty").mkdir()
    with pytest.raises(LatentError, match="cannot load a VQModel"):
        load_vqvae(str(tmp_path / "empty"), "vqvae")


def test_encode_decode_shapes_factor_and_identity(tmp_path):
    import torch

    from diffunlearn.data import to_model_space
    from diffunlearn.latents import LatentError, encode_images, make_decoder, vqvae_identity

    vq = tiny_vqvae()
    images = np.random.default_rng(0).integers(0, 256, (5, 16, 16, 3), dtype=np.uint8)
    z1 = encode_images(vq, images, scaling_factor=1.0, batch_size=2)
    z2 = encode_images(vq, images, scaling_factor=0.5, batch_size=5)
    assert z1.shape == (5, 8, 8, 4) and z1.dtype == np.float32
    np.testing.assert_allclose(z2, 0.5 * z1, rtol=1e-5, atol=1e-6)
    # decoding divides by the factor and quantises, as LDMPipeline: the same pixels from either factor
    x1 = make_decoder(vq, 1.0)(to_model_space(z1))
    x2 = make_decoder(vq, 0.5, batch_size=2)(to_model_space(z2))
    assert x1.shape == (5, 3, 16, 16) and float(x1.abs().max()) <= 1.0
    torch.testing.assert_close(x1, x2, rtol=1e-4, atol=1e-4)
    with torch.no_grad():
        expected = vq.decode(torch.from_numpy(z1).permute(0, 3, 1, 2)).sample.clamp(-1, 1)  # quantised by default
    torch.testing.assert_close(x1, expected, rtol=1e-4, atol=1e-4)
    ident = vqvae_identity(vq, "CompVis/ldm-celebahq-256", "vqvae", 1.0)
    assert ident["scaling_factor"] == 1.0 and ident["config_scaling_factor"] == pytest.approx(0.18215)
    assert ident["kind"] == "hub id" and len(ident["weights_sha256"]) == 64 and ident["downsampling_factor"] == 2
    json.dumps(ident)
    with pytest.raises(LatentError, match="multiple of the VQ-VAE's downsampling factor 2"):
        encode_images(vq, images[:, :15, :15], scaling_factor=1.0)
    with pytest.raises(LatentError, match="data.channels: 3"):
        encode_images(vq, images[..., :1], scaling_factor=1.0)


def test_model_inputs_are_images_or_latents(tmp_path):
    from diffunlearn.data import load_model_inputs, to_model_space
    from diffunlearn.io import save_npz_atomic
    from diffunlearn.latents import save_latents

    images = np.zeros((3, 4, 4, 1), np.uint8)
    save_npz_atomic(tmp_path / "d.npz", train_images=images, val_images=images[:1])
    d = load_model_inputs(tmp_path / "d.npz")
    assert d["train"].dtype == np.uint8 and len(d["val"]) == 1
    lat = np.random.default_rng(0).normal(size=(3, 2, 2, 4)).astype(np.float32) * 3
    save_latents(tmp_path / "l.npz", lat, lat[:1], 1.0)
    d = load_model_inputs(tmp_path / "l.npz")
    x = to_model_space(d["train"])
    assert x.shape == (3, 4, 2, 2) and x.dtype.is_floating_point
    np.testing.assert_array_equal(x.permute(0, 2, 3, 1).numpy(), lat)  # latents are not rescaled


# ---------------------------------------------------------------- through Snakemake


def latent_config(work, vq_folder, **overrides):
    cfg = tiny_config(work / "results", **{
        "forget_sets": [{"id": "dog", "kind": "class", "label": 1}],
        "unlearning.methods": ["do_nothing"], "unlearning.forget_sets": None,  # margins + KLOM, no fine-tuning
        "train.steps": 4, "train.checkpoint_every": 4,
        "sampling.num_samples": 16, "sampling.batch_size": 16,
        "metrics.reference_size": 16,
        **overrides,
    })
    cfg["data"] = {"source": "imagefolder", "root": str(work / "images"), "image_size": 16, "channels": 3,
                   "validation_fraction": 0.2}
    cfg["latents"] = {"enabled": True, "vqvae": str(vq_folder), "subfolder": "vqvae", "scaling_factor": 1.0,
                      "batch_size": 8}
    return cfg


@pytest.fixture(scope="module")
def latent_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("latent_run")
    image_folder(work / "images")
    save_vqvae(work / "vq")
    cfg = latent_config(work, work / "vq")
    configfile = write_config(work / "config.yaml", cfg)
    proc = run_snakemake(work, configfile)
    return work, cfg, job_counts(proc.stdout + proc.stderr)


def job_counts(text) -> dict:
    """Rule -> jobs from the 'job count' table Snakemake prints before running (as conftest.planned_jobs)."""
    counts, in_table = {}, False
    for line in text.splitlines():
        if re.match(r"^job\s+count", line):
            if counts:
                break
            in_table = True
            continue
        if in_table:
            m = re.match(r"^(\w+)\s+(\d+)$", line.strip())
            if m and m.group(1) != "total":
                counts[m.group(1)] = int(m.group(2))
            elif not m and line.strip() and not line.startswith("-"):
                in_table = False
    return counts


@pytest.mark.slow
def test_latent_path_end_to_end(latent_run):
    work, cfg, jobs = latent_run
    # latents computed once, however many models train (an original and an oracle here)
    assert jobs["precompute_latents"] == 1
    assert jobs["train_original"] == 1 and jobs["train_oracle"] == 1
    r = work / "results" / "t"
    info = json.loads((r / "latents" / "dataset.json").read_text())
    assert info["image_shape"] == [16, 16, 3] and info["latent_shape"] == [8, 8, 4]
    assert info["vqvae"]["scaling_factor"] == 1.0 and info["vqvae"]["kind"] == "local folder"
    assert info["vqvae"]["config_scaling_factor"] == pytest.approx(0.18215)
    from diffunlearn.latents import weights_sha256

    assert info["vqvae"]["weights_sha256"] == weights_sha256(tiny_vqvae())
    with np.load(r / "latents" / "dataset.npz") as z:
        assert z["train_latents"].shape[1:] == (8, 8, 4) and z["train_latents"].dtype == np.float32
        n_train = len(z["train_latents"])
    # training in latent space: the UNet's channels and sample size follow the latents
    unet_cfg = json.loads((r / "models" / "original.s0" / "checkpoint-4" / "unet" / "config.json").read_text())
    assert (unet_cfg["in_channels"], unet_cfg["out_channels"], unet_cfg["sample_size"]) == (4, 4, 8)
    # samples decoded to pixel size, scored by FID in pixel space
    samples = np.load(r / "samples" / "original.s0" / "step4" / "samples.npz")["images"]
    assert samples.shape == (16, 16, 16, 3) and samples.dtype == np.uint8
    assert samples.std() > 0
    metric = json.loads((r / "metrics" / "classifier" / "original.s0" / "step4.json").read_text())
    assert np.isfinite(metric["fid"]) and metric["fid"] >= 0
    import pandas as pd

    table = pd.read_csv(r / "report" / "evaluation_results.csv")
    assert set(table["model"]) == {"original.s0", "oracle.dog.s0"} and table["fid_classifier"].notna().all()
    # margins are computed on the latents, for train + validation examples; KLOM reads them
    margins = np.load(r / "margins" / "original.s0.npy")
    assert len(margins) == n_train + len(np.load(r / "latents" / "dataset.npz")["val_latents"])
    assert np.isfinite(margins).all()
    klom = json.loads((r / "klom" / "do_nothing.dog.json").read_text())
    assert klom


@pytest.mark.slow
def test_latent_replanning(latent_run, tmp_path):
    work, cfg, _ = latent_run
    assert planned_jobs(work, write_config(tmp_path / "same.yaml", cfg)) == {}

    def replan(mutate):
        c = copy.deepcopy(cfg)
        mutate(c)
        return planned_jobs(work, write_config(tmp_path / "changed.yaml", c))

    # a training setting: the models again, never the latents
    jobs = replan(lambda c: c["train"].update(lr=5e-4))
    assert jobs["train_original"] == 1 and jobs["train_oracle"] == 1
    assert not {"precompute_latents", "prepare_data", "train_classifier", "reference_stats"} & set(jobs)
    # the encoder's and decoder's batch sizes change no result: nothing to do
    assert replan(lambda c: c["latents"].update(batch_size=3, decode_batch_size=5)) == {}
    # another VQ-VAE (a different folder): the latents and everything downstream of them
    save_vqvae(tmp_path / "vq2", seed=1)
    jobs = replan(lambda c: c["latents"].update(vqvae=str(tmp_path / "vq2")))
    assert jobs["precompute_latents"] == 1
    assert jobs["train_original"] == 1 and jobs["train_oracle"] == 1
    assert jobs["sample"] == 2 and jobs["evaluate"] == 2 and jobs["margins"] == 2 and jobs["report"] == 1
    assert not {"prepare_data", "make_forget_sets", "train_classifier", "reference_stats"} & set(jobs)


@pytest.mark.slow
def test_celebahq_preset_plans_on_a_generated_folder(tmp_path):
    root = image_folder(tmp_path / "celebahq", n_per_class=3, classes=("a",), size=8)
    files = sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file())
    with open(tmp_path / "labels.csv", "w") as fh:
        fh.write("path,label\n" + "".join(f"{f},{i % 3}\n" for i, f in enumerate(files)))
    cfg = yaml.safe_load((ROOT / "config" / "celebahq.yaml").read_text())
    cfg["data"].update(root=str(root), labels_csv=str(tmp_path / "labels.csv"))
    cfg["results_dir"] = str(tmp_path / "results")
    jobs = planned_jobs(tmp_path, write_config(tmp_path / "celebahq.yaml", cfg))
    assert jobs["precompute_latents"] == 1
    assert jobs["train_original"] == len(cfg["seeds"])
    assert jobs["train_oracle"] == len(cfg["seeds"]) * len(cfg["forget_sets"])
    assert jobs["sample"] >= 1 and jobs["evaluate"] >= 1 and jobs["report"] == 1
    assert cfg["model"]["block_out_channels"] == [224, 448, 672, 896] and cfg["latents"]["enabled"]
    # the SYSU-Shape preset (pixel space) plans too
    cfg = yaml.safe_load((ROOT / "config" / "sysu_shape.yaml").read_text())
    cfg["data"]["root"] = str(root)
    cfg["results_dir"] = str(tmp_path / "results")
    jobs = planned_jobs(tmp_path, write_config(tmp_path / "sysu.yaml", cfg))
    assert "precompute_latents" not in jobs and jobs["train_original"] == len(cfg["seeds"])
