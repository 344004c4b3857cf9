"""Data sources turned into one array file: uint8 images (NHWC), integer labels, a fixed split.

File format (``dataset.npz``, written with ``np.savez``, read with ``allow_pickle=False``)::

    train_images  uint8 [N, H, W, C]     val_images  uint8 [M, H, W, C]
    train_labels  int64 [N]              val_labels  int64 [M]
    train_source_index / val_source_index  int64: position in the source, for tracing back

Forget-set indices and margins index the training split (0..N-1); margins of the validation split
follow at N..N+M-1.
"""
from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np

# The file helpers live in diffunlearn.io; these names stay importable from here for existing callers.
from diffunlearn.io import IMAGE_EXTENSIONS, list_image_files


class DataError(ValueError):
    pass


def load_digits_source() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 1,797 handwritten digits (8x8, values 0..16), shipped with the package."""
    from sklearn.datasets import load_digits

    d = load_digits()
    images = np.round(d.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)[..., None]
    return images, d.target.astype(np.int64)


def _check_root(root, source):
    if not root:
        raise DataError(f"data.root is required for source {source!r}")
    if not os.path.isdir(root):
        raise DataError(f"data.root {root!r} for source {source!r} is not a folder")


def load_torchvision_source(source: str, root: str | None, download: bool) -> tuple[np.ndarray, np.ndarray]:
    """mnist / cifar10 training set through torchvision (downloads into root when allowed and online)."""
    import torchvision

    root = root or os.path.join(os.path.expanduser("~"), ".cache", "diffunlearn", source)
    cls = {"mnist": torchvision.datasets.MNIST, "cifar10": torchvision.datasets.CIFAR10}[source]
    try:
        ds = cls(root=root, train=True, download=download)
    except RuntimeError as exc:
        raise DataError(f"cannot load {source} from {root!r}: {exc} (set data.root to a local copy)") from exc
    except OSError as exc:
        raise DataError(f"cannot download {source} into {root!r}: {exc} (offline? set data.root to a local copy)") from exc
    data = np.asarray(ds.data)
    if data.ndim == 3:
        data = data[..., None]
    return data.astype(np.uint8), np.asarray(ds.targets, dtype=np.int64)


def _to_8bit(im):
    """16-bit / 32-bit integer and float grayscale (PIL modes I;16*, I, F) scaled to 8 bits by their type's range."""
    from PIL import Image

    arr = np.asarray(im)
    if im.mode == "F":
        lo, hi = (0.0, 1.0) if arr.size and arr.min() >= 0 and arr.max() <= 1 else (float(arr.min()), float(arr.max()))
    else:
        lo, hi = 0.0, 65535.0 if (im.mode.startswith("I;16") or (arr.size and arr.max() > 255)) else 255.0
    scaled = (arr.astype(np.float64) - lo) * (255.0 / max(hi - lo, 1e-12))
    return Image.fromarray(np.round(scaled).clip(0, 255).astype(np.uint8), mode="L")


def load_image(path: Path, size: int, channels: int):
    """Open, convert, resize the short side to ``size`` and centre-crop to size x size.

    Any PIL mode: EXIF orientation applied; transparency (RGBA, LA, palette with transparency) composited
    onto white; 16-bit and float grayscale scaled to 8 bits; CMYK / YCbCr / palette converted; the first
    frame of an animation.
    """
    from PIL import Image, ImageOps

    with Image.open(path) as im:
        im.load()
        im = ImageOps.exif_transpose(im)
        if im.mode in ("I", "F") or im.mode.startswith("I;16"):
            im = _to_8bit(im)
        if im.mode == "P":
            im = im.convert("RGBA" if "transparency" in im.info else "RGB")
        if im.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
            im = im.convert("RGBA")
            bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
            im = Image.alpha_composite(bg, im)
        im = im.convert("L" if channels == 1 else "RGB")
        w, h = im.size
        scale = size / min(w, h)
        nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
        im = im.resize((nw, nh), Image.BICUBIC)
        left, top = (nw - size) // 2, (nh - size) // 2
        im = im.crop((left, top, left + size, top + size))
        arr = np.asarray(im, dtype=np.uint8)
    return arr[..., None] if arr.ndim == 2 else arr


def _read_labels_csv(labels_csv: str, root: str, files: list[Path]) -> list[str]:
    if not os.path.exists(labels_csv):
        raise DataError(f"data.labels_csv {labels_csv!r} not found")
    with open(labels_csv, newline="") as fh:
        reader = csv.DictReader(fh)
        if not reader.fieldnames or not {"path", "label"} <= {f.strip() for f in reader.fieldnames}:
            raise DataError(f"data.labels_csv {labels_csv!r}: expected the columns path,label, found {reader.fieldnames}")
        table = {os.path.normpath(r["path"].strip()): r["label"].strip()
                 for r in ({k.strip(): v for k, v in row.items()} for row in reader)}
    names, missing = [], []
    for f in files:
        rel = os.path.normpath(str(f.relative_to(root)))
        if rel not in table:
            missing.append(rel)
        names.append(table.get(rel, ""))
    if missing:
        raise DataError(f"data.labels_csv {labels_csv!r} has no label for {len(missing)} of the {len(files)} images "
                        f"under {root!r} (first: {missing[0]})")
    return names


def load_imagefolder_source(
    root: str, size: int, channels: int | None, labels_csv: str | None = None, skip_unreadable: bool = False, log=print
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Every image under ``root`` (recursive). Labels: labels_csv (path,label) or the first sub-folder.

    An unreadable file (corrupt, truncated, not an image) is an error that names it, unless
    ``skip_unreadable``: then it is left out and named in the log.
    """
    _check_root(root, "imagefolder")
    files = list_image_files(root)
    if not files:
        raise DataError(f"no images found under data.root {root!r} (extensions: {', '.join(sorted(IMAGE_EXTENSIONS))})")
    channels = channels or 3
    if labels_csv:
        names = _read_labels_csv(labels_csv, root, files)
    else:
        names = [f.relative_to(root).parts[0] if len(f.relative_to(root).parts) > 1 else "" for f in files]
    images = np.empty((len(files), size, size, channels), dtype=np.uint8)  # filled in place: no second copy
    kept_names, skipped = [], []
    for f, name in zip(files, names):
        try:
            images[len(kept_names)] = load_image(f, size, channels)
        except Exception as exc:  # PIL raises many types for a bad file
            if not skip_unreadable:
                raise DataError(f"unreadable image {f}: {type(exc).__name__}: {exc} "
                                f"(set data.skip_unreadable: true to skip it)") from exc
            log(f"skipping unreadable image {f}: {type(exc).__name__}: {exc}")
            skipped.append(f)
            continue
        kept_names.append(name)
    if skipped:
        log(f"skipped {len(skipped)} unreadable of {len(files)} images")
    if not kept_names:
        raise DataError(f"no readable images under data.root {root!r}")
    classes = sorted(set(kept_names))
    position = {c: i for i, c in enumerate(classes)}
    labels = np.array([position[n] for n in kept_names], dtype=np.int64)
    return images[: len(kept_names)], labels, classes


def resize_images(images: np.ndarray, size: int) -> np.ndarray:
    """Resize a uint8 NHWC batch (bicubic, as torchvision/PIL do for upsampling small digits)."""
    if images.shape[1] == size and images.shape[2] == size:
        return images
    from PIL import Image

    out = []
    for im in images:
        pil = Image.fromarray(im[..., 0] if im.shape[-1] == 1 else im)
        arr = np.asarray(pil.resize((size, size), Image.BICUBIC), dtype=np.uint8)
        out.append(arr[..., None] if arr.ndim == 2 else arr)
    return np.stack(out)


def convert_channels(images: np.ndarray, channels: int | None) -> np.ndarray:
    if channels is None or images.shape[-1] == channels:
        return images
    if channels == 3:
        return np.repeat(images, 3, axis=-1)
    # ITU-R 601-2 luma, as PIL's convert("L")
    gray = images[..., 0] * 0.299 + images[..., 1] * 0.587 + images[..., 2] * 0.114
    return np.round(gray).clip(0, 255).astype(np.uint8)[..., None]


def split_indices(n: int, validation_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A fixed, seeded train / validation split (sorted indices into the source)."""
    from diffunlearn.config import validation_count

    perm = np.random.default_rng(seed).permutation(n)
    n_val = validation_count(n, validation_fraction)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def prepare_dataset(data_cfg: dict, log=print) -> dict[str, np.ndarray]:
    """Load a source as configured and return the arrays of the dataset file."""
    source = data_cfg["source"]
    classes = None
    if source == "digits":
        images, labels = load_digits_source()
    elif source in ("mnist", "cifar10"):
        images, labels = load_torchvision_source(source, data_cfg["root"], data_cfg["download"])
    elif source == "imagefolder":
        images, labels, classes = load_imagefolder_source(
            data_cfg["root"], data_cfg["image_size"], data_cfg["channels"], data_cfg["labels_csv"],
            data_cfg["skip_unreadable"], log=log,
        )
    else:
        raise DataError(f"unknown data.source {source!r}")
    if len(images) == 0:
        raise DataError(f"data source {source!r} is empty")
    source_index = np.arange(len(images))
    if data_cfg["max_examples"] is not None and data_cfg["max_examples"] < len(images):
        keep = np.sort(np.random.default_rng(data_cfg["split_seed"]).permutation(len(images))[: data_cfg["max_examples"]])
        images, labels, source_index = images[keep], labels[keep], source_index[keep]
    images = convert_channels(images, data_cfg["channels"])
    if data_cfg["image_size"] is not None:
        images = resize_images(images, data_cfg["image_size"])
    train, val = split_indices(len(images), data_cfg["validation_fraction"], data_cfg["split_seed"])
    out = {
        "train_images": images[train], "train_labels": labels[train], "train_source_index": source_index[train],
        "val_images": images[val], "val_labels": labels[val], "val_source_index": source_index[val],
    }
    if classes is not None:
        out["class_names"] = np.array(classes, dtype=str)
    return out


def load_dataset(path: str | os.PathLike) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def to_model_space(images_uint8: np.ndarray):
    """uint8 NHWC -> float32 NCHW tensor in [-1, 1], the DDPM convention.

    Float arrays are latents (``diffunlearn.latents``), already in model space: only transposed to NCHW.
    """
    import torch

    if images_uint8.dtype != np.uint8:
        return torch.from_numpy(np.ascontiguousarray(images_uint8, dtype=np.float32)).permute(0, 3, 1, 2).contiguous()
    x = torch.from_numpy(np.ascontiguousarray(images_uint8)).permute(0, 3, 1, 2).float()
    return x.div_(127.5).sub_(1.0)


def load_model_inputs(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """What the diffusion models train on, as {"train": ..., "val": ...} (NHWC): the images of a
    ``dataset.npz`` (uint8) or the latents of a ``latents/<dataset>.npz`` (float32); same order and split."""
    with np.load(path, allow_pickle=False) as z:
        if "train_latents" in z.files:
            return {"train": z["train_latents"], "val": z["val_latents"]}
        return {"train": z["train_images"], "val": z["val_images"]}


def to_uint8(x) -> np.ndarray:
    """float NCHW in [-1, 1] -> uint8 NHWC (round half to even is avoided: floor(v*255+0.5))."""
    import torch

    x = ((x.detach().float().clamp(-1, 1) + 1) * 127.5 + 0.5).floor().clamp(0, 255).to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy()


# ---------------------------------------------------------------- forget sets

def read_index_file(path: str) -> np.ndarray:
    p = Path(path)
    if not p.exists():
        raise DataError(f"forget-set index file {path!r} not found")
    if p.suffix == ".npy":
        idx = np.load(p, allow_pickle=False)
    elif p.suffix == ".json":
        idx = np.asarray(json.loads(p.read_text()))
    else:
        tokens = p.read_text().replace(",", " ").split()
        try:
            idx = np.asarray([int(t) for t in tokens])
        except ValueError as exc:
            raise DataError(f"forget-set index file {path!r}: {exc}") from exc
    return np.asarray(idx).astype(np.int64).ravel()


def make_forget_set(definition: dict, train_labels: np.ndarray) -> np.ndarray:
    """Sorted training-set indices of one forget set; deterministic from its definition."""
    n = len(train_labels)
    kind, fid = definition["kind"], definition["id"]
    if kind == "random":
        size = definition["size"]
        if size >= n:
            raise DataError(f"forget set {fid!r}: size {size} is not smaller than the training set ({n} examples)")
        idx = np.random.default_rng(definition.get("seed", 0)).choice(n, size=size, replace=False)
    elif kind == "class":
        idx = np.flatnonzero(train_labels == definition["label"])
        if len(idx) == 0:
            raise DataError(f"forget set {fid!r}: no training example has label {definition['label']}")
        if len(idx) >= n:
            raise DataError(f"forget set {fid!r}: class {definition['label']} is the whole training set")
    elif kind == "index_file":
        idx = read_index_file(definition["path"])
        bad = idx[(idx < 0) | (idx >= n)]
        if len(bad):
            raise DataError(f"forget set {fid!r}: index {int(bad[0])} in {definition['path']!r} is outside 0..{n - 1}")
        idx = np.unique(idx)
        if len(idx) >= n:
            raise DataError(f"forget set {fid!r}: the index file covers the whole training set")
    else:
        raise DataError(f"forget set {fid!r}: unknown kind {kind!r}")
    return np.sort(idx).astype(np.int64)


def load_forget_set(path: str | os.PathLike) -> np.ndarray:
    return np.asarray(json.loads(Path(path).read_text())["indices"], dtype=np.int64)


def retain_mask(n_train: int, forget_indices: np.ndarray) -> np.ndarray:
    mask = np.ones(n_train, dtype=bool)
    mask[forget_indices] = False
    return mask
