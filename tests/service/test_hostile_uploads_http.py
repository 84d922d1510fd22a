"""The hostile-upload corpus through the real HTTP API: refused, explained, and nothing kept.

Each upload goes through ``create_app`` (real SQLite database, SQLite-file broker,
``LocalBlobStore`` under the settings' data dir) and must answer the right 4xx as
``application/problem+json`` with a detail that names the problem and no server
path; afterwards the data dir holds only the two SQLite databases (no dataset
blobs, no staging leftovers) and the tenant has no dataset.
"""

from __future__ import annotations

import os
import shutil
import sys
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from service.config import Settings

sys.path.append(str(Path(__file__).with_name("ingest")))  # the corpus builders live beside the ingest tests
import hostile  # noqa: E402
from wellformed import folder_entries, small_npz_arrays, write_npz, write_zip  # noqa: E402

PROBLEM = "application/problem+json"
MAX_UPLOAD = 256 * 1024
MAX_EXPANDED = 1024 * 1024
MAX_ENTRIES = 40
MAX_PIXELS = 1_000_000
# SQLite files (and their journals) of the database and the broker: all a refused upload may leave.
ALLOWED_FILES = {
    f"{name}{suffix}" for name in ("rarefit.db", "broker.db") for suffix in ("", "-wal", "-shm", "-journal")
}


@pytest.fixture
def api_settings(sqlite_settings: Callable[..., Settings], _migrated_template: Path) -> Settings:
    """The shared app settings with test-sized limits (overrides tests/service/conftest.py)."""
    settings = sqlite_settings(
        bootstrap_api_key="rf_test-bootstrap-key-0123456789abcdef",
        max_upload_bytes=MAX_UPLOAD,
        max_expanded_bytes=MAX_EXPANDED,
        max_archive_entries=MAX_ENTRIES,
        max_image_pixels=MAX_PIXELS,
    )
    shutil.copyfile(_migrated_template, settings.data_dir / "rarefit.db")
    return settings


def _npz(path: Path, **overrides) -> Path:
    arrays = {**small_npz_arrays(), **overrides}
    return write_npz(path, **{key: value for key, value in arrays.items() if value is not None})


def _labels_out_of_range(path: Path) -> Path:
    val = small_npz_arrays(counts=(2, 2))
    val["train_labels"][0] = 5
    return _npz(path, val_images=val["train_images"], val_labels=val["train_labels"], class_names=np.array(["a", "b"]))


def _tar_slip(path: Path) -> Path:
    info = tarfile.TarInfo("../evil.png")
    info.size = 3
    return hostile.tar_with(path, info, b"abc")


def _random_bytes(path: Path) -> Path:
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    return path


def _empty(path: Path) -> Path:
    path.write_bytes(b"")
    return path


# (file name, builder, status, fragments the detail must contain)
CORPUS = {
    "zip_slip_relative": (
        "slip.zip",
        lambda p: hostile.zip_with(p, "train/cat/../../../evil.png"),
        422,
        ["contains '..'"],
    ),
    "zip_slip_absolute": ("abs.zip", lambda p: hostile.zip_with(p, "/etc/x"), 422, ["'/etc/x' has an absolute path"]),
    "tar_slip": ("slip.tar.gz", _tar_slip, 422, ["'../evil.png'"]),
    "zip_symlink": ("link.zip", hostile.zip_symlink, 422, ["'train/cat/link.png' is a symbolic link"]),
    "zip_device": ("dev.zip", hostile.zip_device, 422, ["'train/cat/tty.png' is a device"]),
    "zip_bomb": (
        "bomb.zip",
        lambda p: hostile.zip_bomb(p, expanded=4 * MAX_EXPANDED),
        413,
        ["bomb.png", f"limit of {MAX_EXPANDED} bytes"],
    ),
    "too_many_entries": (
        "many.zip",
        lambda p: hostile.zip_many_entries(p, count=3 * MAX_ENTRIES),
        413,
        [f"more than {MAX_ENTRIES} entries"],
    ),
    "decompression_bomb_png": (
        "png.zip",
        lambda p: hostile.zip_with(p, "train/cat/bomb.png", hostile.bomb_png(width=20000, height=20000)),
        422,
        ["'train/cat/bomb.png'", "decompression bomb"],
    ),
    "truncated_png": (
        "cut.zip",
        lambda p: hostile.zip_with(p, "train/dog/cut.png", hostile.truncated_png()),
        422,
        ["'train/dog/cut.png' is truncated or corrupt"],
    ),
    "dicom_huge_frame": (
        "dcm.zip",
        lambda p: hostile.zip_with(p, "train/cat/huge.dcm", hostile.dicom_huge_frame()),
        422,
        ["'train/cat/huge.dcm' is 65535x65535", "over the limit of"],
    ),
    "truncated_dicom": (
        "cutdcm.zip",
        lambda p: hostile.zip_with(p, "train/dog/cut.dcm", hostile.dicom_truncated()),
        422,
        ["'train/dog/cut.dcm' is a truncated or corrupt DICOM"],
    ),
    "tiff_bomb": (
        "tif.zip",
        lambda p: hostile.zip_with(p, "train/cat/bomb.tif", hostile.tiff_declaring_huge_size()),
        422,
        ["'train/cat/bomb.tif'", "decompression bomb"],
    ),
    "polyglot": ("poly.zip", hostile.polyglot_png_zip, 415, ["'poly.zip' is named like a .zip file", "PNG image"]),
    "non_utf8_names": (
        "names.zip",
        lambda p: hostile.zip_non_utf8_names(p, raw=b"\xff\x1b[31m", image=b"no"),
        422,
        ["not a readable image", "\\x1b[31m"],
    ),
    "zero_bytes": ("empty.zip", _empty, 422, ["'empty.zip' is empty (0 bytes)"]),
    "pickled_npz": ("pickle.npz", hostile.npz_object_array, 422, ["'train_images' is an object array"]),
    "one_class_npz": (
        "one.npz",
        lambda p: _npz(p, train_labels=np.zeros((18, 1), np.uint8)),
        422,
        ["1 class ('0'); at least 2 classes are needed"],
    ),
    "empty_class_npz": (
        "gap.npz",
        lambda p: _npz(p, train_labels=np.array([0, 2] * 9, np.uint8)),
        422,
        ["class '1' has no train images"],
    ),
    "mismatched_split": (
        "mis.npz",
        lambda p: _npz(p, train_labels=np.array([0, 1] * 8, np.uint8)),
        422,
        ["train_labels has 16 labels but train_images has 18"],
    ),
    "split_of_other_shape": (
        "shape.npz",
        lambda p: _npz(p, test_images=np.zeros((4, 5, 5), np.uint8), test_labels=np.array([0, 1, 0, 1])),
        422,
        ["split 'test' has images of shape (5, 5, 1)"],
    ),
    "labels_out_of_range": ("range.npz", _labels_out_of_range, 422, ["split 'val' has label 5 outside 0..1"]),
    "float_images": (
        "float.npz",
        lambda p: _npz(p, train_images=np.zeros((18, 6, 6), np.float32)),
        422,
        ["train_images has dtype float32"],
    ),
    "random_bytes": ("blob.bin", _random_bytes, 415, ["'blob.bin' is not a supported format", "Accepted: .npz"]),
    "random_bytes_named_zip": ("x.zip", _random_bytes, 415, ["'x.zip' is named like a .zip file", "not a zip"]),
    "npy_named_npz": ("x.npz", hostile.npy_named_npz, 415, ["not a zip archive"]),
}


def leftover_files(root: Path) -> list[str]:
    """Every file under the data dir except the SQLite databases (empty folders may stay)."""
    found = []
    for folder, _, names in os.walk(root):
        found += [os.path.relpath(os.path.join(folder, name), root) for name in names]
    return sorted(name for name in found if name not in ALLOWED_FILES)


def assert_refused(response, *, status: int, fragments: list[str], settings: Settings) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body = response.json()
    assert body["status"] == status and body["title"]
    detail = body["detail"]
    for fragment in fragments:
        assert fragment in detail, detail
    for path in (str(settings.data_dir), str(settings.data_dir.parent), str(settings.blob_dir), "/tmp/", "/work/"):
        assert path not in detail, detail
    assert detail.isprintable(), detail


def assert_nothing_kept(client, headers: dict[str, str], settings: Settings) -> None:
    assert leftover_files(settings.data_dir) == []
    assert client.get("/v1/datasets", headers=headers).json()["items"] == []


@pytest.mark.parametrize("case", sorted(CORPUS))
def test_hostile_upload_is_refused_and_leaves_nothing(api_client, alpha, api_settings, tmp_path, case: str) -> None:
    filename, build, status, fragments = CORPUS[case]
    uploads = tmp_path / "uploads"
    uploads.mkdir()
    path = build(uploads / filename)
    assert path.stat().st_size <= MAX_UPLOAD  # refused for its content, not its size
    with path.open("rb") as handle:
        response = api_client.post("/v1/datasets", files={"file": (filename, handle)}, headers=alpha)
    assert_refused(response, status=status, fragments=fragments, settings=api_settings)
    assert_nothing_kept(api_client, alpha, api_settings)


def _multipart(filename: str, size: int, boundary: str = "hostile-boundary") -> Iterator[bytes]:
    """A multipart body with one file part of ``size`` bytes, in 64 KiB chunks."""
    yield (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    chunk = bytes(64 * 1024)
    for start in range(0, size, len(chunk)):
        yield chunk[: min(len(chunk), size - start)]
    yield f"\r\n--{boundary}--\r\n".encode()


@pytest.mark.parametrize(
    ("size", "streamed"),
    [
        (4 * MAX_UPLOAD, False),  # Content-Length over the limit: refused before reading
        (4 * MAX_UPLOAD, True),  # chunked, no Content-Length: cut off while streaming
        (MAX_UPLOAD + 1, False),  # within the multipart slack: the file copy stops at the exact limit
        (MAX_UPLOAD + 1, True),
    ],
)
def test_oversize_upload_is_413_and_leaves_nothing(api_client, alpha, api_settings, size: int, streamed: bool) -> None:
    headers = {**alpha, "Content-Type": "multipart/form-data; boundary=hostile-boundary"}
    parts = _multipart("big.npz", size)
    content = parts if streamed else b"".join(parts)
    response = api_client.post("/v1/datasets", content=content, headers=headers)
    if not streamed:
        assert response.request.headers["content-length"] == str(len(content))
    else:
        assert "content-length" not in response.request.headers
    assert_refused(response, status=413, fragments=[f"limit of {MAX_UPLOAD}"], settings=api_settings)
    assert_nothing_kept(api_client, alpha, api_settings)


def test_a_good_upload_after_hostile_ones_still_works(api_client, alpha, api_settings, tmp_path) -> None:
    """The refusals above are about the files, not a broken route: the same client can upload."""
    path = write_zip(tmp_path / "good.zip", folder_entries({"cat": 12, "dog": 6}))
    for name in ("zip_bomb", "pickled_npz"):
        filename, build, status, _ = CORPUS[name]
        bad = build(tmp_path / filename)
        with bad.open("rb") as handle:
            refused = api_client.post("/v1/datasets", files={"file": (filename, handle)}, headers=alpha)
        assert refused.status_code == status
    with path.open("rb") as handle:
        response = api_client.post("/v1/datasets", files={"file": ("good.zip", handle)}, headers=alpha)
    assert response.status_code == 201, response.text
    assert response.json()["class_names"] == ["cat", "dog"]
