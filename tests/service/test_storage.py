"""LocalBlobStore: atomic writes, key safety, folder-semantics deletes, readiness."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest

from service.storage import BlobInfo, BlobStore, LocalBlobStore, make_blob_store, sha256_file, validate_key


@pytest.fixture
def store(tmp_path: Path) -> LocalBlobStore:
    return LocalBlobStore(tmp_path / "blobs")


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_put_bytes_round_trip_and_info(store: LocalBlobStore) -> None:
    data = os.urandom(3000)
    info = store.put_bytes("jobs/j1/artifacts/metrics.json", data)
    assert info == BlobInfo(size=3000, sha256=hashlib.sha256(data).hexdigest())
    assert store.exists("jobs/j1/artifacts/metrics.json")
    assert store.size("jobs/j1/artifacts/metrics.json") == 3000
    with store.open("jobs/j1/artifacts/metrics.json") as handle:
        assert handle.read() == data
    assert _files(store.root) == ["jobs/j1/artifacts/metrics.json"]  # no temp file left


def test_put_file_copies_and_move_renames(store: LocalBlobStore, tmp_path: Path) -> None:
    src = tmp_path / "src.bin"
    src.write_bytes(b"abc" * 1000)
    copied = store.put_file("a/copy.bin", src)
    assert src.exists() and copied.sha256 == sha256_file(src)
    moved = store.put_file("a/moved.bin", src, move=True)
    assert not src.exists()
    assert moved == copied
    assert store.local_path("a/moved.bin").read_bytes() == b"abc" * 1000


def test_put_overwrites_atomically(store: LocalBlobStore) -> None:
    store.put_bytes("k/v", b"old")
    store.put_bytes("k/v", b"new")
    with store.open("k/v") as handle:
        assert handle.read() == b"new"
    assert _files(store.root) == ["k/v"]


@pytest.mark.parametrize(
    "key", ["", "/etc/passwd", "../x", "a/../../x", "a//b", "a/./b", "a\\b", "a b", "a/", ".staging/x", "é"]
)
def test_unsafe_keys_are_rejected(store: LocalBlobStore, key: str) -> None:
    with pytest.raises(ValueError, match="invalid blob key"):
        store.put_bytes(key, b"x")
    assert _files(store.root) == []


def test_key_validation_accepts_ordinary_keys() -> None:
    assert validate_key("datasets/ab12/train_images.npy") == "datasets/ab12/train_images.npy"
    with pytest.raises(TypeError):
        validate_key(Path("a"))  # type: ignore[arg-type]


def test_delete_prefix_has_folder_semantics(store: LocalBlobStore) -> None:
    for key in ("datasets/ab/x.npy", "datasets/ab/sub/y.npy", "datasets/abc/z.npy"):
        store.put_bytes(key, b"1")
    store.delete_prefix("datasets/ab")
    assert _files(store.root) == ["datasets/abc/z.npy"]
    store.delete_prefix("datasets/ab")  # idempotent
    store.delete_prefix("datasets/abc/z.npy")  # a single blob
    assert _files(store.root) == []
    assert not (store.root / "datasets").exists()  # emptied parents are pruned


def test_missing_blob_errors_name_the_key(store: LocalBlobStore) -> None:
    with pytest.raises(FileNotFoundError, match="nope/x"):
        store.open("nope/x")
    with pytest.raises(FileNotFoundError, match="nope/x"):
        store.size("nope/x")
    assert not store.exists("nope/x")


def test_tmp_dir_is_inside_root_on_the_same_filesystem(store: LocalBlobStore) -> None:
    tmp = store.tmp_dir()
    assert tmp.parent == store.root and tmp.is_dir()
    assert os.stat(tmp).st_dev == os.stat(store.root).st_dev


def test_local_path_supports_mmap(store: LocalBlobStore) -> None:
    path = store.local_path("datasets/d/train_labels.npy")
    np.save(path, np.arange(5, dtype=np.int64))
    loaded = np.load(path, mmap_mode="r", allow_pickle=False)
    assert isinstance(loaded, np.memmap) and loaded.tolist() == [0, 1, 2, 3, 4]


def test_check_passes_when_writable_and_fails_when_not(store: LocalBlobStore) -> None:
    store.check()
    assert _files(store.root) == []
    staging = store.tmp_dir()
    staging.rmdir()
    staging.write_bytes(b"a file where the staging folder should be")
    with pytest.raises(OSError):
        store.check()


def test_make_blob_store_uses_settings_blob_dir(sqlite_settings) -> None:
    settings = sqlite_settings()
    store = make_blob_store(settings)
    assert isinstance(store, LocalBlobStore) and isinstance(store, BlobStore)
    assert store.root == settings.blob_dir
