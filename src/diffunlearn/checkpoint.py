"""Checkpoints: a DDPMPipeline folder (EMA weights) plus what exact resumption needs.

Layout of ``checkpoint-<step>/``::

    model_index.json, unet/, scheduler/   DDPMPipeline.from_pretrained / UNet2DModel.from_pretrained(subfolder="unet")
    unet/pruned.json                      only for a pruned model: its layer shapes (load_ema_unet rebuilds it)
    training_state/lora.json              only for a LoRA run (unet/ then holds the merged EMA weights): the adapter;
    training_state/ema.safetensors        with it the adapted EMA weights (raw.safetensors: the adapted raw ones)
    training_state/raw.safetensors        the non-EMA weights
    training_state/optimizer.safetensors  optimizer tensors (``<param index>.<name>``)
    training_state/state.json             step, optimizer hyper-parameters, loss scaler, wall seconds, fingerprint
    manifest.json                         sha256 and size of every file; written last

A checkpoint is written under a temporary name and renamed, so a folder called ``checkpoint-N`` is either
complete or absent; the manifest also catches later truncation. Only safetensors and JSON are read back:
nothing that could run code is unpickled.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from diffunlearn.io import sha256_file

MANIFEST = "manifest.json"


class CorruptCheckpointError(RuntimeError):
    pass


def write_manifest(folder: Path) -> None:
    files = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file() and p.name != MANIFEST:
            files[str(p.relative_to(folder))] = {"sha256": sha256_file(p), "size": p.stat().st_size}
    (folder / MANIFEST).write_text(json.dumps({"files": files}, indent=1, sort_keys=True))


def verify_checkpoint(folder: str | os.PathLike) -> None:
    """Raise :class:`CorruptCheckpointError` naming the first missing, truncated or altered file."""
    folder = Path(folder)
    manifest = folder / MANIFEST
    if not manifest.exists():
        raise CorruptCheckpointError(f"corrupt checkpoint {folder}: {MANIFEST} is missing (incomplete write?)")
    try:
        files = json.loads(manifest.read_text())["files"]
    except (ValueError, KeyError) as exc:
        raise CorruptCheckpointError(f"corrupt checkpoint {folder}: unreadable {MANIFEST}") from exc
    for rel, meta in files.items():
        p = folder / rel
        if not p.exists():
            raise CorruptCheckpointError(f"corrupt checkpoint {folder}: {rel} is missing")
        if p.stat().st_size != meta["size"]:
            raise CorruptCheckpointError(
                f"corrupt checkpoint {folder}: {rel} has {p.stat().st_size} bytes, expected {meta['size']} (truncated?)"
            )
        if sha256_file(p) != meta["sha256"]:
            raise CorruptCheckpointError(f"corrupt checkpoint {folder}: {rel} does not match its sha256")


def _flatten_optimizer(state_dict: dict):
    tensors, scalars = {}, {}
    for idx, st in state_dict["state"].items():
        for name, value in st.items():
            key = f"{idx}.{name}"
            if hasattr(value, "shape"):
                tensors[key] = value.detach().contiguous().cpu()
            else:
                scalars[key] = value
    return tensors, {"param_groups": state_dict["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict, meta: dict) -> dict:
    state: dict = {}
    for key, value in list(tensors.items()) + list(meta["scalars"].items()):
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = value
    return {"state": state, "param_groups": meta["param_groups"]}


def save_checkpoint(folder: str | os.PathLike, *, ema_unet, raw_unet, scheduler, optimizer_state: dict, state: dict) -> Path:
    """Write a complete checkpoint atomically (temporary folder, then rename)."""
    from diffusers import DDPMPipeline
    from safetensors.torch import save_file

    folder = Path(folder)
    tmp = folder.with_name(f".{folder.name}.tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    from diffunlearn.lora import LORA_JSON, lora_of, merged_copy
    from diffunlearn.prune import is_pruned, write_pruned_json

    lora = lora_of(ema_unet)
    plain = merged_copy(ema_unet) if lora else ema_unet  # an adapted model is saved merged (diffunlearn.lora)
    DDPMPipeline(unet=plain, scheduler=scheduler).save_pretrained(tmp, safe_serialization=True)
    if is_pruned(plain):  # the layer shapes that rebuild it (diffunlearn.prune)
        write_pruned_json(tmp / "unet", plain)
    ts = tmp / "training_state"
    ts.mkdir()
    if lora:  # the adapted weights and the adapter, for exact resumption
        save_file({k: v.detach().contiguous().cpu() for k, v in ema_unet.state_dict().items()}, ts / "ema.safetensors")
        (ts / LORA_JSON).write_text(json.dumps(lora, indent=1, sort_keys=True))
    save_file({k: v.detach().contiguous().cpu() for k, v in raw_unet.state_dict().items()}, ts / "raw.safetensors")
    tensors, opt_meta = _flatten_optimizer(optimizer_state)
    save_file(tensors, ts / "optimizer.safetensors")
    (ts / "state.json").write_text(json.dumps({**state, "optimizer": opt_meta}, indent=1, sort_keys=True))
    write_manifest(tmp)
    if folder.exists():
        shutil.rmtree(folder)
    os.replace(tmp, folder)
    return folder


def load_state(folder: str | os.PathLike) -> dict:
    return json.loads((Path(folder) / "training_state" / "state.json").read_text())


def load_ema_unet(folder: str | os.PathLike, verify: bool = True):
    """The EMA UNet of a checkpoint; a pruned one (``unet/pruned.json``) is rebuilt with its pruned shapes."""
    from diffunlearn.models import unet_class
    from diffunlearn.prune import read_pruned_json, rebuild_pruned

    if verify:
        verify_checkpoint(folder)
    if read_pruned_json(Path(folder) / "unet") is not None:
        return rebuild_pruned(Path(folder) / "unet")
    return unet_class().from_pretrained(Path(folder) / "unet", use_safetensors=True)


def load_training_state(folder: str | os.PathLike, raw_unet, ema_unet, verify: bool = True) -> tuple[dict, dict]:
    """Load raw + EMA weights in place (resizing their layers to a pruned checkpoint's); return (optimizer state
    dict, state.json)."""
    from safetensors.torch import load_file

    from diffunlearn.lora import LORA_JSON, attach_lora, lora_of
    from diffunlearn.prune import read_pruned_json, resize_like

    folder = Path(folder)
    if verify:
        verify_checkpoint(folder)
    spec = read_pruned_json(folder / "unet")
    if spec is not None:  # a pruned checkpoint: give both models its layer shapes first
        resize_like(raw_unet, spec["layers"])
        resize_like(ema_unet, spec["layers"])
    ema_file = folder / "unet" / "diffusion_pytorch_model.safetensors"
    if (folder / "training_state" / LORA_JSON).exists():  # an adapted run: both models get the adapter
        lora = json.loads((folder / "training_state" / LORA_JSON).read_text())
        for model in (raw_unet, ema_unet):
            if lora_of(model) is None:
                attach_lora(model, lora)
        ema_file = folder / "training_state" / "ema.safetensors"
    raw_unet.load_state_dict(load_file(folder / "training_state" / "raw.safetensors"))
    ema_src = load_file(ema_file)
    ema_unet.load_state_dict(ema_src)
    state = load_state(folder)
    opt_state = _unflatten_optimizer(load_file(folder / "training_state" / "optimizer.safetensors"), state.pop("optimizer"))
    return opt_state, state


def list_checkpoints(folder: str | os.PathLike) -> list[tuple[int, Path]]:
    folder = Path(folder)
    if not folder.is_dir():
        return []
    out = []
    for p in folder.iterdir():
        if p.is_dir() and p.name.startswith("checkpoint-") and p.name[11:].isdigit():
            out.append((int(p.name[11:]), p))
    return sorted(out)


def latest_valid_checkpoint(folder, fingerprint: str | None = None, log=print) -> Path | None:
    """Newest checkpoint that verifies (and matches the run's fingerprint); corrupt ones are reported."""
    for _step, path in reversed(list_checkpoints(folder)):
        try:
            verify_checkpoint(path)
        except CorruptCheckpointError as exc:
            log(f"warning: {exc}; not resuming from it")
            continue
        if fingerprint is not None and load_state(path).get("fingerprint") != fingerprint:
            log(f"warning: {path} belongs to a different configuration; not resuming from it")
            continue
        return path
    return None


def write_initial_checkpoint(folder, unet, scheduler, seed: int) -> Path:
    """Step 0 of a run: the random initialisation (the 'empty' model of attribution)."""
    return save_checkpoint(folder, ema_unet=unet, raw_unet=unet, scheduler=scheduler,
                           optimizer_state={"state": {}, "param_groups": []},
                           state={"step": 0, "seed": seed, "wall_seconds": 0.0, "examples_seen": 0, "loss_log": [],
                                  "device": "cpu"})
