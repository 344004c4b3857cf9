import json

import numpy as np
import pytest
from PIL import Image

from diffunlearn.config import validate_config
from diffunlearn.data import (
    DataError,
    load_digits_source,
    make_forget_set,
    prepare_dataset,
    retain_mask,
    to_model_space,
    to_uint8,
)


def _data_cfg(**kw):
    cfg = validate_config({"data": kw})
    return cfg["data"]


def test_digits_split_is_fixed_and_disjoint():
    out = prepare_dataset(_data_cfg(source="digits", validation_fraction=0.1))
    images, labels = load_digits_source()
    assert out["train_images"].dtype == np.uint8 and out["train_images"].shape[1:] == (8, 8, 1)
    assert len(out["train_images"]) + len(out["val_images"]) == len(images) == 1797
    assert len(out["val_images"]) == 180
    assert not set(out["train_source_index"]) & set(out["val_source_index"])
    # the arrays are the source's images at the recorded positions
    assert np.array_equal(out["train_images"], images[out["train_source_index"]])
    assert np.array_equal(out["val_labels"], labels[out["val_source_index"]])
    again = prepare_dataset(_data_cfg(source="digits", validation_fraction=0.1))
    assert np.array_equal(again["train_source_index"], out["train_source_index"])
    assert images.max() == 255 and images.min() == 0


def test_digits_upsampled_to_rgb():
    out = prepare_dataset(_data_cfg(source="digits", image_size=16, channels=3, max_examples=50))
    assert out["train_images"].shape[1:] == (16, 16, 3)


def _write_folder(root, n=4, size=(10, 14)):
    for cls in ("a", "b"):
        (root / cls / "nested").mkdir(parents=True)
        for i in range(n):
            arr = (np.random.default_rng(i).random((size[1], size[0], 3)) * 255).astype(np.uint8)
            Image.fromarray(arr).save(root / cls / "nested" / f"{i}.png")
    Image.new("LA", (20, 20)).save(root / "a" / "gray.png")  # grayscale + alpha
    Image.new("RGBA", (8, 30)).save(root / "b" / "rgba.png")
    (root / "b" / "x.jpg").write_bytes(open(root / "a" / "nested" / "0.png", "rb").read())  # wrong extension: fine for PIL


def test_imagefolder_nested_mixed_sizes_and_modes(tmp_path):
    _write_folder(tmp_path)
    out = prepare_dataset(_data_cfg(source="imagefolder", root=str(tmp_path), image_size=8, validation_fraction=0.2))
    n = len(out["train_images"]) + len(out["val_images"])
    assert n == 11
    assert out["train_images"].shape[1:] == (8, 8, 3)
    assert set(out["class_names"]) == {"a", "b"}


def test_imagefolder_corrupt_file_is_named(tmp_path):
    _write_folder(tmp_path)
    (tmp_path / "a" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nthis is not an image")
    with pytest.raises(DataError, match=r"unreadable image .*a/broken.png"):
        prepare_dataset(_data_cfg(source="imagefolder", root=str(tmp_path), image_size=8))
    skipped = []
    out = prepare_dataset(_data_cfg(source="imagefolder", root=str(tmp_path), image_size=8, skip_unreadable=True),
                          log=skipped.append)
    assert len(out["train_images"]) + len(out["val_images"]) == 11
    assert any("broken.png" in m for m in skipped)


def test_missing_or_empty_sources_are_clear_errors(tmp_path):
    with pytest.raises(DataError, match="not a folder"):
        prepare_dataset(_data_cfg(source="imagefolder", root=str(tmp_path / "nope"), image_size=8))
    with pytest.raises(DataError, match="no images found"):
        prepare_dataset(_data_cfg(source="imagefolder", root=str(tmp_path), image_size=8))
    with pytest.raises(DataError, match="cifar10"):
        prepare_dataset(_data_cfg(source="cifar10", root=str(tmp_path), download=False))


def test_forget_sets_are_deterministic_and_valid(tmp_path):
    labels = np.repeat(np.arange(5), 20)
    a = make_forget_set({"id": "r", "kind": "random", "size": 7, "seed": 3}, labels)
    b = make_forget_set({"id": "r", "kind": "random", "size": 7, "seed": 3}, labels)
    assert np.array_equal(a, b) and len(np.unique(a)) == 7 and np.all(np.diff(a) > 0)
    c = make_forget_set({"id": "c", "kind": "class", "label": 2}, labels)
    assert np.array_equal(c, np.arange(40, 60))
    (tmp_path / "idx.txt").write_text("5\n3\n3\n")
    d = make_forget_set({"id": "f", "kind": "index_file", "path": str(tmp_path / "idx.txt")}, labels)
    assert d.tolist() == [3, 5]
    (tmp_path / "bad.json").write_text(json.dumps([1, 500]))
    with pytest.raises(DataError, match="index 500 .* outside 0..99"):
        make_forget_set({"id": "f", "kind": "index_file", "path": str(tmp_path / "bad.json")}, labels)
    with pytest.raises(DataError, match="not smaller than the training set"):
        make_forget_set({"id": "r", "kind": "random", "size": 100}, labels)
    mask = retain_mask(100, c)
    assert mask.sum() == 80 and not mask[45]


def test_model_space_round_trip():
    images = load_digits_source()[0][:10]
    assert np.array_equal(to_uint8(to_model_space(images)), images)
    x = to_model_space(images)
    assert float(x.min()) == -1.0 and float(x.max()) == 1.0
