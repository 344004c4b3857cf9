"""diffunlearn.io: atomic writes, a file's sha256, the image-folder lister."""
import hashlib
import json

import numpy as np
import pytest

from diffunlearn.io import (
    atomic_path,
    list_image_files,
    save_npy_atomic,
    save_npz_atomic,
    sha256_file,
    write_json_atomic,
)


def test_writers_write_what_numpy_and_json_read_back(tmp_path):
    write_json_atomic(tmp_path / "a" / "x.json", {"b": 1, "a": [1.5]})
    assert json.loads((tmp_path / "a" / "x.json").read_text()) == {"a": [1.5], "b": 1}
    save_npz_atomic(tmp_path / "x.npz", u=np.arange(3), v=np.eye(2))
    with np.load(tmp_path / "x.npz") as z:
        assert z["u"].tolist() == [0, 1, 2] and z["v"].tolist() == [[1, 0], [0, 1]]
    save_npy_atomic(tmp_path / "x.npy", np.arange(4.0))
    assert np.load(tmp_path / "x.npy").tolist() == [0.0, 1.0, 2.0, 3.0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "x.npy", "x.npz"]  # no temporaries left


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "x.json"
    write_json_atomic(target, {"old": True})
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert json.loads(target.read_text()) == {"old": True}
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]


def test_a_folder_replaces_the_old_folder(tmp_path):
    target = tmp_path / "model"
    for content in ("first", "second"):
        with atomic_path(target) as tmp:
            tmp.mkdir()
            (tmp / "f.txt").write_text(content)
            assert tmp.parent == tmp_path
    assert (target / "f.txt").read_text() == "second"
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


def test_the_temporary_keeps_the_suffix(tmp_path):
    with atomic_path(tmp_path / "grid.png") as tmp:
        assert tmp.suffix == ".png" and tmp.name.startswith(".grid.png.tmp-")
        tmp.write_bytes(b"x")


def test_sha256_file_matches_hashlib(tmp_path):
    data = np.random.default_rng(0).bytes(3 * 1024 + 7)
    (tmp_path / "f").write_bytes(data)
    assert sha256_file(tmp_path / "f", chunk=1024) == hashlib.sha256(data).hexdigest()


def test_list_image_files_skips_hidden_files_and_folders(tmp_path):
    for rel in ["b/2.PNG", "a/1.jpg", "a/sub/3.jpeg", "top.webp", "._top.jpg", "a/.hidden.png", ".cache/4.png",
                "notes.txt", "a/sub/5.tif"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    (tmp_path / "folder.png").mkdir()  # a folder named like an image
    found = [p.relative_to(tmp_path).as_posix() for p in list_image_files(tmp_path)]
    assert found == ["a/1.jpg", "a/sub/3.jpeg", "a/sub/5.tif", "b/2.PNG", "top.webp"]
    assert [p.name for p in list_image_files(tmp_path, recursive=False)] == ["top.webp"]
    with pytest.raises(FileNotFoundError, match="not a folder"):
        list_image_files(tmp_path / "top.webp")
