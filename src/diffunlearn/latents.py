"""Latent diffusion: a diffusers ``VQModel`` encodes the prepared images once; models train on the latents.

File format (``latents/<dataset>.npz``, written with ``np.savez``, read with ``allow_pickle=False``)::

    train_latents  float32 [N, h, w, c]    val_latents  float32 [M, h, w, c]
    scaling_factor float64 []              the factor the latents were multiplied by

The latents are stored channels-last like the images of ``dataset.npz`` (same example order, same
split), already multiplied by ``latents.scaling_factor``: they are what the UNet sees. Decoding divides
by the same factor and goes through the VQ-VAE's quantiser, as diffusers' ``LDMPipeline`` does.

The scaling factor is explicit because ``CompVis/ldm-celebahq-256``'s VQ-VAE config has no
``scaling_factor``: diffusers then assumes 0.18215 (the Stable Diffusion KL-VAE's value), while the
CelebA-HQ source trains at 1.0. The factor used is recorded beside the VQ-VAE's own config value.
"""
from __future__ import annotations

import hashlib
import json
import os

import numpy as np


class LatentError(RuntimeError):
    """The VQ-VAE cannot be loaded or does not fit the data."""


def load_vqvae(source: str, subfolder: str | None = "vqvae", local_files_only: bool | None = None):
    """A ``VQModel`` from a local folder (``save_pretrained`` output, with or without ``subfolder``) or a
    Hugging Face hub id (downloaded into the hub cache when online, read from the cache when offline)."""
    from diffusers import VQModel

    expanded = os.path.expanduser(source)
    if os.path.isdir(expanded):
        sub = subfolder if subfolder and os.path.isdir(os.path.join(expanded, subfolder)) else None
        try:
            return VQModel.from_pretrained(expanded, subfolder=sub)
        except (OSError, ValueError) as exc:
            where = os.path.join(expanded, sub) if sub else expanded
            raise LatentError(f"latents.vqvae: cannot load a VQModel from {where!r}: {exc}") from None
    if source.startswith((".", "/", "~")) or source.count("/") != 1:
        raise LatentError(f"latents.vqvae: local folder {source!r} not found (and it is not a hub id owner/name)")
    offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")
    # the hub cache first (no network round trip on cluster nodes), then the hub itself unless told not to
    attempts = [True] if local_files_only or offline else ([False] if local_files_only is False else [True, False])
    for only_local in attempts:
        try:
            return VQModel.from_pretrained(source, subfolder=subfolder or None, local_files_only=only_local)
        except (OSError, ValueError) as exc:
            error = exc
    what = f"{source!r}" + (f" (subfolder {subfolder!r})" if subfolder else "")
    first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    raise LatentError(
        f"latents.vqvae: cannot load the VQ-VAE {what} from the Hugging Face hub or its cache ({first}), and there "
        f"is no local folder of that name; offline, download it once where there is a network (huggingface-cli "
        f"download {source}" + (f" --include '{subfolder}/*'" if subfolder else "") + ") or set latents.vqvae to a "
        "local folder"
    ) from None


def weights_sha256(module) -> str:
    """sha256 over the state dict: every tensor's name, dtype, shape and bytes, in name order."""
    import torch

    h = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().to("cpu").contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}\n".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def downsampling_factor(vqvae) -> int:
    """Pixels per latent side: 2 per encoder level but the last (diffusers' Encoder)."""
    return 2 ** (len(vqvae.config.block_out_channels) - 1)


def vqvae_identity(vqvae, source: str, subfolder: str | None, scaling_factor: float) -> dict:
    """What names the VQ-VAE of a latent data set: where it came from, its config, its weights' sha256."""
    cfg = {k: v for k, v in dict(vqvae.config).items() if not k.startswith("_")}
    cfg = json.loads(json.dumps(cfg, default=lambda o: list(o) if isinstance(o, tuple) else str(o)))
    expanded = os.path.expanduser(source)
    local = os.path.isdir(expanded)
    return {
        "source": os.path.abspath(expanded) if local else source,
        "kind": "local folder" if local else "hub id",
        "subfolder": subfolder,
        "class": type(vqvae).__name__,
        "config": cfg,
        "config_scaling_factor": vqvae.config.get("scaling_factor"),
        "scaling_factor": float(scaling_factor),
        "weights_sha256": weights_sha256(vqvae),
        "weights_sha256_of": "state dict (tensor name, dtype, shape, bytes; names sorted)",
        "num_parameters": int(sum(p.numel() for p in vqvae.parameters())),
        "downsampling_factor": downsampling_factor(vqvae),
    }


def encode_images(vqvae, images: np.ndarray, *, scaling_factor: float, batch_size: int = 64, device="cpu",
                  progress=None) -> np.ndarray:
    """uint8 NHWC images -> float32 NHWC latents (pre-quantisation encoder output x ``scaling_factor``)."""
    import torch

    from diffunlearn.data import to_model_space

    if images.ndim != 4 or images.dtype != np.uint8:
        raise LatentError(f"expected uint8 images [N, H, W, C], got {images.dtype} {images.shape}")
    if images.shape[-1] != vqvae.config.in_channels:
        raise LatentError(f"the VQ-VAE takes {vqvae.config.in_channels}-channel images but the data set has "
                          f"{images.shape[-1]} (set data.channels: {vqvae.config.in_channels})")
    factor = downsampling_factor(vqvae)
    if images.shape[1] % factor or images.shape[2] % factor:
        raise LatentError(f"image size {images.shape[1]}x{images.shape[2]} is not a multiple of the VQ-VAE's "
                          f"downsampling factor {factor} (set data.image_size)")
    vqvae = vqvae.to(device).eval()
    out = []
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            x = to_model_space(images[start : start + batch_size]).to(device)
            z = vqvae.encode(x).latents.float() * scaling_factor
            out.append(z.permute(0, 2, 3, 1).cpu().numpy())
            if progress:
                progress(min(start + batch_size, len(images)))
    if not out:
        shape = (0, images.shape[1] // factor, images.shape[2] // factor, vqvae.config.latent_channels)
        return np.zeros(shape, dtype=np.float32)
    return np.ascontiguousarray(np.concatenate(out).astype(np.float32))


def make_decoder(vqvae, scaling_factor: float, batch_size: int | None = None):
    """latents (model space, NCHW) -> pixels in [-1, 1] (NCHW): divide by the factor, quantise, decode."""
    import torch

    def decode(latents):
        with torch.inference_mode():
            z = latents.to(next(vqvae.parameters()).device, torch.float32) / scaling_factor
            step = batch_size or len(z)
            parts = [vqvae.decode(z[i : i + step]).sample for i in range(0, len(z), step)]
            return torch.cat(parts).clamp(-1, 1)

    return decode


def save_latents(path, train_latents: np.ndarray, val_latents: np.ndarray, scaling_factor: float) -> None:
    from diffunlearn.io import save_npz_atomic

    save_npz_atomic(path, train_latents=train_latents.astype(np.float32), val_latents=val_latents.astype(np.float32),
                    scaling_factor=np.float64(scaling_factor))


def precompute(data_path, out_npz, out_json, out_vqvae, *, source: str, subfolder: str | None, scaling_factor: float,
               batch_size: int, device, log=print) -> dict:
    """Encode ``dataset.npz`` with the VQ-VAE; write the latents, the identity record and a copy of the VQ-VAE
    (``save_pretrained``) that sampling decodes with, so every job downstream uses exactly these weights."""
    import time

    from diffunlearn.data import load_dataset
    from diffunlearn.io import write_json_atomic

    d = load_dataset(data_path)
    vqvae = load_vqvae(source, subfolder)
    identity = vqvae_identity(vqvae, source, subfolder, scaling_factor)
    if identity["config_scaling_factor"] is not None and abs(identity["config_scaling_factor"] - scaling_factor) > 1e-12:
        log(f"note: the VQ-VAE's config says scaling_factor {identity['config_scaling_factor']} (diffusers' default "
            f"when the checkpoint has none); latents.scaling_factor {scaling_factor} is used and recorded")
    log(f"VQ-VAE {identity['source']} ({identity['num_parameters']} parameters, weights sha256 "
        f"{identity['weights_sha256'][:16]}...), downsampling x{identity['downsampling_factor']}, on {device}")
    t0 = time.time()
    n = len(d["train_images"]) + len(d["val_images"])
    train = encode_images(vqvae, d["train_images"], scaling_factor=scaling_factor, batch_size=batch_size, device=device,
                          progress=lambda i: log(f"train {i}/{len(d['train_images'])}") if i % (batch_size * 20) == 0 else None)
    val = encode_images(vqvae, d["val_images"], scaling_factor=scaling_factor, batch_size=batch_size, device=device)
    seconds = time.time() - t0
    log(f"{n} images {tuple(d['train_images'].shape[1:])} -> latents {tuple(train.shape[1:])} in {seconds:.1f} s; "
        f"latent mean {train.mean():.4f}, std {train.std():.4f}")
    save_latents(out_npz, train, val, scaling_factor)
    vqvae.to("cpu").save_pretrained(out_vqvae)
    record = {
        "vqvae": identity,
        "image_shape": list(d["train_images"].shape[1:]),
        "latent_shape": list(train.shape[1:]),
        "num_train": int(len(train)),
        "num_validation": int(len(val)),
        "latent_mean": float(train.mean()) if train.size else None,
        "latent_std": float(train.std()) if train.size else None,
        "seconds": seconds,
        "device": str(device),
        "vqvae_copy": str(out_vqvae),
    }
    write_json_atomic(out_json, record)
    return record


def load_vqvae_copy(folder):
    """The VQ-VAE that precompute_latents saved beside the latents."""
    from diffusers import VQModel

    return VQModel.from_pretrained(str(folder))
