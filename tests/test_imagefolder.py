"""The image-folder source: nested folders, mixed formats, sizes and modes, labels, unreadable files."""
import numpy as np
import pytest
from PIL import Image

from diffunlearn.config import validate_config
from diffunlearn.data import DataError, load_image, prepare_dataset
from diffunlearn.io import list_image_files


def _cfg(root, **kw):
    return validate_config({"data": {"source": "imagefolder", "root": str(root), "image_size": 8,
                                     "validation_fraction": 0.25, **kw}})["data"]


def _mixed_folder(root):
    """10 readable images in nested folders: png, JPG, bmp, webp, gif, tif; L, LA, RGBA, P, I;16, CMYK; sizes 5..40."""
    rng = np.random.default_rng(0)
    (root / "shapes" / "deep" / "er").mkdir(parents=True)
    (root / "faces").mkdir()
    rgb = lambda w, h: Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))  # noqa: E731
    rgb(12, 9).save(root / "shapes" / "a.png")
    rgb(40, 10).save(root / "shapes" / "deep" / "b.JPG", format="JPEG")
    rgb(5, 7).save(root / "shapes" / "deep" / "er" / "c.bmp")
    rgb(16, 16).save(root / "shapes" / "d.webp")
    Image.new("L", (9, 11), 90).save(root / "faces" / "gray.png")
    Image.new("LA", (20, 20), (30, 0)).save(root / "faces" / "gray_alpha.png")
    Image.new("RGBA", (8, 30), (255, 0, 0, 0)).save(root / "faces" / "transparent.png")
    Image.new("P", (10, 10), 3).save(root / "faces" / "palette.gif")
    Image.fromarray(np.full((10, 10), 65535, np.uint16)).save(root / "faces" / "sixteen.tif")
    Image.new("CMYK", (10, 12), (0, 255, 255, 0)).save(root / "faces" / "cmyk.jpg")
    (root / "faces" / "._gray.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble")  # macOS resource fork: ignored
    (root / ".cache").mkdir()
    rgb(8, 8).save(root / ".cache" / "thumb.png")  # hidden folder: ignored
    (root / "faces" / "notes.txt").write_text("not an image")
    return root


def test_nested_mixed_formats_sizes_and_modes(tmp_path):
    root = _mixed_folder(tmp_path)
    assert len(list_image_files(root)) == 10
    out = prepare_dataset(_cfg(root, channels=3))
    images = np.concatenate([out["train_images"], out["val_images"]])
    assert images.shape == (10, 8, 8, 3) and images.dtype == np.uint8
    assert list(out["class_names"]) == ["faces", "shapes"]
    labels = np.concatenate([out["train_labels"], out["val_labels"]])
    assert sorted(np.bincount(labels).tolist()) == [4, 6]
    gray = prepare_dataset(_cfg(root, channels=1))
    assert gray["train_images"].shape[1:] == (8, 8, 1)


def test_modes_convert_as_expected(tmp_path):
    root = _mixed_folder(tmp_path)
    faces = root / "faces"
    assert (load_image(faces / "transparent.png", 8, 3) == 255).all()  # fully transparent red -> white background
    assert (load_image(faces / "gray_alpha.png", 8, 1) == 255).all()
    assert (load_image(faces / "sixteen.tif", 8, 1) == 255).all()  # 16-bit white stays white (not clipped noise)
    assert (load_image(faces / "gray.png", 8, 3) == 90).all()
    red = load_image(faces / "cmyk.jpg", 8, 3).reshape(-1, 3).mean(axis=0)
    assert red[0] > 200 and red[1] < 60 and red[2] < 60
    assert load_image(root / "shapes" / "deep" / "b.JPG", 8, 3).shape == (8, 8, 3)  # 40x10: short side 8, centre crop


@pytest.mark.parametrize("content", [b"\x89PNG\r\n\x1a\nnot a png", b""])
def test_unreadable_file_is_named_and_skipped_only_when_configured(tmp_path, content):
    root = _mixed_folder(tmp_path)
    bad = root / "shapes" / "deep" / "broken.png"
    bad.write_bytes(content)
    with pytest.raises(DataError, match=r"unreadable image .*shapes/deep/broken\.png.*skip_unreadable") as err:
        prepare_dataset(_cfg(root))
    assert "\n" not in str(err.value)
    messages = []
    out = prepare_dataset(_cfg(root, skip_unreadable=True), log=messages.append)
    assert len(out["train_images"]) + len(out["val_images"]) == 10
    assert any("broken.png" in m for m in messages)


def test_truncated_image_is_named(tmp_path):
    root = _mixed_folder(tmp_path)
    full = (root / "shapes" / "a.png").read_bytes()
    (root / "shapes" / "truncated.png").write_bytes(full[: len(full) // 2])
    with pytest.raises(DataError, match=r"truncated\.png"):
        prepare_dataset(_cfg(root))


def test_labels_csv(tmp_path):
    root = _mixed_folder(tmp_path / "img")
    files = [p.relative_to(root) for p in list_image_files(root)]
    csv = tmp_path / "labels.csv"
    csv.write_text("path,label\n" + "".join(f"{f},id{i % 3}\n" for i, f in enumerate(files)))
    out = prepare_dataset(_cfg(root, labels_csv=str(csv)))
    assert list(out["class_names"]) == ["id0", "id1", "id2"]
    csv.write_text("path,label\n" + "".join(f"{f},x\n" for f in files[1:]))
    with pytest.raises(DataError, match=rf"no label for 1 of the 10 images .*first: {files[0]}"):
        prepare_dataset(_cfg(root, labels_csv=str(csv)))
    csv.write_text("file,identity\na.png,1\n")
    with pytest.raises(DataError, match="expected the columns path,label"):
        prepare_dataset(_cfg(root, labels_csv=str(csv)))
