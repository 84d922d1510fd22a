"""Canonical storage: all-or-nothing writes, memory-mapped reads, the API summary."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import numpy as np
import pytest
from ingest_support import ingest, leftover_files, scratch_of
from wellformed import folder_entries, write_zip

from service.ingest import DecodedDataset, IngestLimits, load_canonical, load_meta, store_canonical, summarize
from service.storage import BlobCorrupt, BlobInfo, LocalBlobStore, StorageFull


def _decoded(counts=((3, 10), (1, 2), (1, 2))) -> DecodedDataset:
    rng = np.random.default_rng(0)
    splits = {}
    for split, per_class in zip(("train", "val", "test"), counts, strict=True):
        labels = np.repeat(np.arange(len(per_class)), per_class).astype(np.int64)
        splits[split] = (rng.integers(0, 256, size=(len(labels), 5, 4, 3), dtype=np.uint8), labels)
    return DecodedDataset(
        format="imagefolder",
        class_names=["rare", "common"],
        image_shape=(5, 4, 3),
        splits=splits,
        notes=["a note"],
    )


class _DiskFullOnMeta(LocalBlobStore):
    """A store whose disk fills up just as meta.json is written (after every array landed)."""

    def write(self, key: str, data: bytes) -> BlobInfo:
        raise OSError(errno.ENOSPC, "No space left on device")


def test_summarize_gives_the_api_fields() -> None:
    assert summarize(_decoded()) == {
        "num_classes": 2,
        "class_names": ["rare", "common"],
        "image_shape": [5, 4, 3],
        "pixel_bits": 8,
        "splits": {
            "train": {"count": 13, "class_counts": [3, 10]},
            "val": {"count": 3, "class_counts": [1, 2]},
            "test": {"count": 3, "class_counts": [1, 2]},
        },
        "imbalance_ratio": 3.33,
    }


def test_store_and_load_round_trip(store: LocalBlobStore, tmp_path: Path) -> None:
    decoded = _decoded()
    stored = store_canonical(decoded, store=store, prefix="datasets/d1", scratch=tmp_path / "scratch")
    loaded = load_canonical(store, "datasets/d1", staging=tmp_path / "run")
    for split, (images, labels) in decoded.splits.items():
        got_images, got_labels = loaded[split]
        assert isinstance(got_images, np.memmap) and not got_images.flags.writeable
        assert got_images.dtype == np.uint8 and got_images.flags.c_contiguous
        assert got_labels.dtype == np.int64
        np.testing.assert_array_equal(got_images, images)
        np.testing.assert_array_equal(got_labels, labels)
    in_memory = load_canonical(store, "datasets/d1", staging=tmp_path / "run2", mmap=False)
    assert not isinstance(in_memory["train"][0], np.memmap)
    meta = load_meta(store, "datasets/d1")
    assert meta == stored.meta == json.loads(json.dumps(stored.meta))
    assert meta["format"] == "imagefolder" and meta["notes"] == ["a note"]
    assert meta["imbalance_ratio"] == 3.33
    assert stored.size_bytes == sum(p.stat().st_size for p in (store.root / "datasets/d1").iterdir())
    assert leftover_files(store.root) == sorted(
        [f"datasets/d1/{s}_{p}.npy" for s in ("train", "val", "test") for p in ("images", "labels")]
        + ["datasets/d1/meta.json"]
    )


def test_a_failed_write_leaves_nothing_under_the_prefix(tmp_path: Path) -> None:
    store = _DiskFullOnMeta(tmp_path / "blobs")
    with pytest.raises(OSError, match="No space"):
        store_canonical(_decoded(), store=store, prefix="datasets/d1", scratch=tmp_path / "scratch")
    assert leftover_files(store.root) == [] and leftover_files(tmp_path / "scratch") == []


def test_a_full_disk_during_ingest_is_storage_full_and_leaves_nothing(
    tmp_path: Path, files: Path, limits: IngestLimits
) -> None:
    store = _DiskFullOnMeta(tmp_path / "blobs")
    path = write_zip(files / "ok.zip", folder_entries({"a": 5, "b": 5}))
    with pytest.raises(StorageFull, match="out of disk space"):  # the route answers it 507, not 500
        ingest(path, store=store, limits=limits)
    assert leftover_files(store.root) == [] and leftover_files(scratch_of(store)) == []


def test_load_canonical_catches_an_array_changed_in_the_store(store: LocalBlobStore, tmp_path: Path) -> None:
    store_canonical(_decoded(), store=store, prefix="datasets/d1", scratch=tmp_path / "scratch")
    path = store.local_path("datasets/d1/train_labels.npy")
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(BlobCorrupt, match="train_labels.npy"):
        load_canonical(store, "datasets/d1", staging=tmp_path / "run")


def test_store_canonical_needs_all_three_splits(store: LocalBlobStore, tmp_path: Path) -> None:
    decoded = _decoded()
    del decoded.splits["test"]
    with pytest.raises(ValueError, match="'test'"):
        store_canonical(decoded, store=store, prefix="datasets/d2", scratch=tmp_path / "scratch")
    assert leftover_files(store.root) == []


def test_load_canonical_of_a_missing_dataset(store: LocalBlobStore, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="datasets/none"):
        load_canonical(store, "datasets/none", staging=tmp_path / "run")


def test_ingest_upload_rejects_a_bad_dataset_id(store: LocalBlobStore, files: Path, limits: IngestLimits) -> None:
    path = write_zip(files / "ok.zip", folder_entries({"a": 5, "b": 5}))
    with pytest.raises(ValueError, match="invalid blob key"):
        ingest(path, store=store, limits=limits, dataset_id="../escape")
    assert leftover_files(store.root) == []
