"""The blob store contract, run against LocalBlobStore and S3BlobStore (a real moto S3 server).

Atomic writes and publishes, streaming reads, hashed downloads that catch a
corrupted object, key safety, folder-semantics list and delete, readiness,
and the storage URL that picks the implementation.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from service.storage import (
    BlobCorrupt,
    BlobInfo,
    BlobStore,
    LocalBlobStore,
    StorageUnavailable,
    make_blob_store,
    parse_storage_url,
    validate_key,
)


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BlobStore]:
    if request.param == "local":
        yield LocalBlobStore(tmp_path / "blobs")
        return
    from service.storage.s3 import S3BlobStore

    server = request.getfixturevalue("moto_server")
    yield S3BlobStore(bucket=server.new_bucket(), prefix="pre/fix", endpoint_url=server.endpoint_url)


def _staged(tmp_path: Path, data: bytes, name: str = "src.bin") -> Path:
    path = tmp_path / "staging" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_write_round_trip_and_info(store: BlobStore) -> None:
    data = os.urandom(3000)
    info = store.write("jobs/j1/artifacts/metrics.json", data)
    assert info == BlobInfo(size=3000, sha256=hashlib.sha256(data).hexdigest())
    assert store.exists("jobs/j1/artifacts/metrics.json")
    assert store.size("jobs/j1/artifacts/metrics.json") == 3000
    with store.open_read("jobs/j1/artifacts/metrics.json") as handle:
        assert handle.read(1000) + handle.read() == data  # a stream: read in parts
    assert store.list("jobs") == ["jobs/j1/artifacts/metrics.json"]  # no temp object left


def test_publish_moves_a_staged_file_in_and_consumes_it(store: BlobStore, tmp_path: Path) -> None:
    src = _staged(tmp_path, b"abc" * 1000)
    info = store.publish("a/moved.bin", src)
    assert not src.exists()
    assert info == BlobInfo(size=3000, sha256=hashlib.sha256(b"abc" * 1000).hexdigest())
    with store.open_read("a/moved.bin") as handle:
        assert handle.read() == b"abc" * 1000


def test_large_publish_goes_up_in_parts_and_comes_back_whole(moto_server, tmp_path: Path) -> None:
    from service.storage.s3 import S3BlobStore

    bucket = moto_server.new_bucket()
    store = S3BlobStore(bucket=bucket, endpoint_url=moto_server.endpoint_url, multipart_bytes=5 * 1024 * 1024)
    data = os.urandom(11 * 1024 * 1024)
    info = store.publish("datasets/d/train_images.npy", _staged(tmp_path, data))
    head = moto_server.client().head_object(Bucket=bucket, Key="datasets/d/train_images.npy")
    assert head["ETag"].strip('"').endswith("-3")  # a multipart upload's ETag counts its parts
    assert head["Metadata"]["sha256"] == info.sha256 == hashlib.sha256(data).hexdigest()
    got = store.download("datasets/d/train_images.npy", tmp_path / "back.npy", sha256=info.sha256)
    assert got == info and (tmp_path / "back.npy").read_bytes() == data


def test_overwrite_replaces_the_whole_blob(store: BlobStore) -> None:
    store.write("k/v", b"old")
    store.write("k/v", b"new")
    with store.open_read("k/v") as handle:
        assert handle.read() == b"new"
    assert store.list("k") == ["k/v"]


def test_download_checks_the_hash_and_leaves_nothing_on_a_mismatch(store: BlobStore, tmp_path: Path) -> None:
    info = store.write("jobs/j/checkpoints/a0-e00001.pt", b"checkpoint bytes")
    dest = tmp_path / "run" / "resume.pt"
    assert store.download("jobs/j/checkpoints/a0-e00001.pt", dest, sha256=info.sha256) == info
    assert dest.read_bytes() == b"checkpoint bytes"
    store.write("jobs/j/checkpoints/a0-e00001.pt", b"next")  # the staged copy is a copy, whatever its kind
    assert dest.read_bytes() == b"checkpoint bytes"
    store.delete("jobs/j")
    assert dest.read_bytes() == b"checkpoint bytes"
    dest.unlink()
    store.write("jobs/j/checkpoints/a0-e00001.pt", b"checkpoint bytEs")  # one flipped byte in the store
    with pytest.raises(BlobCorrupt, match=f"expected {info.sha256}"):
        store.download("jobs/j/checkpoints/a0-e00001.pt", dest, sha256=info.sha256)
    assert list(dest.parent.iterdir()) == []


UNSAFE_KEYS = ["", "/etc/passwd", "../x", "a/../../x", "a//b", "a/./b", "a\\b", "a b", ".staging/x", "é"]


def test_unsafe_keys_are_rejected(store: BlobStore, tmp_path: Path) -> None:
    for key in UNSAFE_KEYS:
        with pytest.raises(ValueError, match="invalid blob key"):
            store.write(key, b"x")
        with pytest.raises(ValueError, match="invalid blob key"):
            store.publish(key, _staged(tmp_path, b"x"))
    assert store.list("a") == []


def test_key_validation_accepts_ordinary_keys() -> None:
    assert validate_key("datasets/ab12/train_images.npy") == "datasets/ab12/train_images.npy"
    with pytest.raises(TypeError):
        validate_key(Path("a"))  # type: ignore[arg-type]


def test_list_and_delete_have_folder_semantics(store: BlobStore) -> None:
    for key in ("datasets/ab/x.npy", "datasets/ab/sub/y.npy", "datasets/abc/z.npy"):
        store.write(key, b"1")
    assert store.list("datasets/ab") == ["datasets/ab/sub/y.npy", "datasets/ab/x.npy"]
    store.delete("datasets/ab")
    assert store.list("datasets") == ["datasets/abc/z.npy"]
    store.delete("datasets/ab")  # idempotent
    store.delete("datasets/abc/z.npy")  # a single blob
    assert store.list("datasets") == []


def test_missing_blob_errors_name_the_key(store: BlobStore, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope/x"):
        store.open_read("nope/x")
    with pytest.raises(FileNotFoundError, match="nope/x"):
        store.size("nope/x")
    with pytest.raises(FileNotFoundError, match="nope/x"):
        store.download("nope/x", tmp_path / "x")
    assert not store.exists("nope/x")


def test_check_passes_on_a_working_store(store: BlobStore) -> None:
    store.check()
    assert store.list("probe") == []


def test_local_check_fails_when_the_root_is_not_writable(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "blobs")
    (store.root / ".staging").write_bytes(b"a file where the staging folder should be")
    with pytest.raises(OSError):
        store.check()


def test_s3_unreachable_is_retried_then_reported_without_the_endpoint(moto_server) -> None:
    from service.storage.s3 import S3BlobStore

    with __import__("socket").socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}"
    store = S3BlobStore(bucket="nowhere", endpoint_url=dead, retry_seconds=0.5)
    with pytest.raises(StorageUnavailable, match="unreachable for 0 s") as caught:
        store.write("a/b", b"x")
    assert dead not in str(caught.value)
    with pytest.raises(StorageUnavailable):
        store.check()


def test_make_blob_store_defaults_to_the_data_dir(sqlite_settings) -> None:
    settings = sqlite_settings()
    store = make_blob_store(settings)
    assert isinstance(store, LocalBlobStore) and isinstance(store, BlobStore)
    assert store.root == settings.blob_dir


def test_make_blob_store_follows_the_storage_url(sqlite_settings, tmp_path: Path, moto_server) -> None:
    local = make_blob_store(sqlite_settings(storage_url=f"file://{tmp_path}/elsewhere"))
    assert isinstance(local, LocalBlobStore) and local.root == tmp_path / "elsewhere"
    bucket = moto_server.new_bucket()
    remote = make_blob_store(
        sqlite_settings(storage_url=f"s3://{bucket}/a/b", s3_endpoint_url=moto_server.endpoint_url)
    )
    assert isinstance(remote, BlobStore) and (remote.bucket, remote.prefix) == (bucket, "a/b")  # type: ignore[attr-defined]
    remote.write("k", b"v")
    assert [o["Key"] for o in moto_server.client().list_objects_v2(Bucket=bucket)["Contents"]] == ["a/b/k"]


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://host/x", "scheme must be one of"),
        ("file://relative/dir", "absolute path"),
        ("s3:///prefix", "needs a bucket"),
    ],
)
def test_bad_storage_urls_fail_at_start_up_naming_the_problem(sqlite_settings, url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        sqlite_settings(storage_url=url)
    with pytest.raises(ValueError, match=message):
        parse_storage_url(url)
