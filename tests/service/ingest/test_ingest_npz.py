"""MedMNIST-layout .npz uploads: the shared PneumoniaMNIST file and small generated variants."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from ingest_support import ingest, leftover_files, rejected
from wellformed import class_value, small_npz_arrays, write_npz

from service.ingest import IngestLimits, ingest_file, load_canonical, load_meta
from service.storage import LocalBlobStore


def _labels_match_pixels(images: np.ndarray, labels: np.ndarray) -> bool:
    """The first pixel of each image encodes its class (wellformed.class_value)."""
    return bool(np.array_equal(images.reshape(len(images), -1)[:, 0], [class_value(int(k)) for k in labels]))


def test_pneumoniamnist_ingests_with_official_counts(
    pneumonia_npz: Path, store: LocalBlobStore, limits: IngestLimits
) -> None:
    result = ingest(pneumonia_npz, store=store, limits=limits, dataset_id="pneu")
    assert result.format == "npz"
    assert result.blob_prefix == "datasets/pneu"
    summary = result.summary
    assert summary["num_classes"] == 2 and summary["class_names"] == ["0", "1"]
    assert summary["image_shape"] == [28, 28, 1]
    assert summary["splits"]["train"] == {"count": 4708, "class_counts": [1214, 3494]}
    assert summary["splits"]["val"] == {"count": 524, "class_counts": [135, 389]}
    assert summary["splits"]["test"] == {"count": 624, "class_counts": [234, 390]}
    assert summary["imbalance_ratio"] == round(3494 / 1214, 2) == 2.88
    assert result.notes == []

    arrays = load_canonical(store, "datasets/pneu", staging=store.root.parent / "run")
    with np.load(pneumonia_npz) as original:  # the oracle: the file itself
        for split in ("train", "val", "test"):
            images, labels = arrays[split]
            assert isinstance(images, np.memmap) and images.dtype == np.uint8 and labels.dtype == np.int64
            assert images.flags.c_contiguous
            np.testing.assert_array_equal(images[..., 0], original[f"{split}_images"])
            np.testing.assert_array_equal(labels, original[f"{split}_labels"][:, 0])
    meta = load_meta(store, "datasets/pneu")
    assert meta["format"] == "npz" and meta["splits"] == summary["splits"]
    sizes = sum(store.size(f"datasets/pneu/{name}") for name in meta["files"]) + store.size("datasets/pneu/meta.json")
    assert result.size_bytes == sizes
    assert [f for f in leftover_files(store.root) if not f.startswith("datasets/pneu/")] == []


def test_missing_val_and_test_are_carved_stratified_and_seeded(files: Path, limits: IngestLimits) -> None:
    arrays = small_npz_arrays(counts=(40, 20))
    arrays["train_images"][:, 1, 1] = np.arange(60)  # each image carries its index
    path = write_npz(files / "d.npz", **arrays)
    first = ingest_file(path, filename="d.npz", limits=limits, split_seed=3)
    again = ingest_file(path, filename="d.npz", limits=limits, split_seed=3)
    other = ingest_file(path, filename="d.npz", limits=limits, split_seed=4)

    def indices(decoded, split):
        return decoded.splits[split][0][:, 1, 1, 0].tolist()

    assert first.class_counts("train") == [32, 16]
    assert first.class_counts("val") == first.class_counts("test") == [4, 2]
    assert sorted(sum((indices(first, s) for s in ("train", "val", "test")), [])) == list(range(60))
    for split in ("train", "val", "test"):
        assert indices(first, split) == sorted(indices(first, split))  # original order kept
        assert indices(first, split) == indices(again, split)  # same seed, same split
        assert _labels_match_pixels(first.splits[split][0][:, 0], first.splits[split][1])
    assert indices(first, "val") != indices(other, "val")
    assert any("carved val (6 images), test (6 images)" in note for note in first.notes)


def test_only_the_missing_split_is_carved(files: Path, limits: IngestLimits) -> None:
    arrays = small_npz_arrays(counts=(30, 10))
    val = small_npz_arrays(counts=(3, 2), seed=1)
    path = write_npz(files / "d.npz", **arrays, val_images=val["train_images"], val_labels=val["train_labels"])
    decoded = ingest_file(path, filename="d.npz", limits=limits)
    assert decoded.class_counts("val") == [3, 2]  # given: untouched
    assert decoded.class_counts("test") == [3, 1]  # carved: 10% per class, at least 1
    assert decoded.class_counts("train") == [27, 9]


def test_class_names_rgb_and_wider_integer_dtypes(files: Path, limits: IngestLimits) -> None:
    arrays = small_npz_arrays(counts=(10, 10))
    rgb = np.repeat(arrays["train_images"][..., None], 3, axis=3).astype(np.int32)
    rgb[..., 1] = 7  # a real colour image
    path = write_npz(
        files / "d.npz",
        train_images=rgb,
        train_labels=arrays["train_labels"].astype(np.int64),
        class_names=np.array(["normal", "pneumonia"]),
    )
    decoded = ingest_file(path, filename="upload.npz", limits=limits)
    assert decoded.class_names == ["normal", "pneumonia"]
    assert decoded.image_shape == (6, 6, 3)
    assert decoded.splits["train"][0].dtype == np.uint8


def test_uint16_images_are_kept_at_16_bits_and_8_bit_splits_widened(
    files: Path, store: LocalBlobStore, limits: IngestLimits
) -> None:
    arrays = small_npz_arrays(counts=(10, 10))
    wide = arrays["train_images"].astype(np.uint16) * 257 + 1  # the low byte carries information
    val = small_npz_arrays(counts=(3, 2), seed=1)  # uint8
    path = write_npz(
        files / "d.npz",
        train_images=wide.astype(">u2"),  # big-endian is uint16 too
        train_labels=arrays["train_labels"],
        val_images=val["train_images"],
        val_labels=val["train_labels"],
    )
    result = ingest(path, store=store, limits=limits, dataset_id="wide")
    assert result.summary["pixel_bits"] == 16
    loaded = load_canonical(store, "datasets/wide", staging=store.root.parent / "run")
    assert {images.dtype for images, _ in loaded.values()} == {np.dtype(np.uint16)}
    train = np.concatenate([loaded["train"][0], loaded["test"][0]])  # test carved from train
    assert sorted(train.reshape(-1).tolist()) == sorted(wide.reshape(-1).tolist())
    np.testing.assert_array_equal(loaded["val"][0][..., 0], val["train_images"].astype(np.uint16) * 257)


def test_an_8_bit_npz_is_stored_exactly_as_before(files: Path, store: LocalBlobStore, limits: IngestLimits) -> None:
    arrays = small_npz_arrays(counts=(10, 10))
    result = ingest(write_npz(files / "d.npz", **arrays), store=store, limits=limits, dataset_id="narrow")
    assert result.summary["pixel_bits"] == 8
    loaded = load_canonical(store, "datasets/narrow", staging=store.root.parent / "run")
    assert all(images.dtype == np.uint8 for images, _ in loaded.values())
    assert sum(images.nbytes for images, _ in loaded.values()) == arrays["train_images"].size


def _npz(files: Path, **overrides) -> Path:
    arrays = small_npz_arrays()
    arrays.update(overrides)
    return write_npz(files / "bad.npz", **{k: v for k, v in arrays.items() if v is not None})


@pytest.mark.parametrize(
    ("overrides", "detail"),
    [
        ({"train_labels": np.zeros((18, 1), dtype=np.uint8)}, "1 class ('0'); at least 2 classes are needed"),
        ({"train_labels": np.array([0, 2] * 9, dtype=np.uint8)}, "class '1' has no train images"),
        (
            {"train_labels": np.array([0, 1] * 8, dtype=np.uint8)},
            "train_labels has 16 labels but train_images has 18",
        ),
        ({"train_images": np.zeros((18, 6, 6), dtype=np.float32)}, "train_images has dtype float32"),
        ({"train_images": np.full((18, 6, 6), 300, dtype=np.int16)}, "values outside 0..255 (dtype int16); send 16"),
        ({"train_images": np.zeros((18, 6, 6, 4), dtype=np.uint8)}, "C = 1 or 3"),
        ({"train_labels": np.array([0.0, 1.0] * 9)}, "train_labels has dtype float64"),
        ({"train_labels": None}, "lacks train_images and/or train_labels"),
        ({"class_names": np.array(["a", "a"])}, "distinct non-empty strings"),
    ],
)
def test_malformed_npz_is_rejected_with_a_named_problem(
    files: Path, store: LocalBlobStore, limits: IngestLimits, overrides: dict, detail: str
) -> None:
    error = rejected(_npz(files, **overrides), store=store, limits=limits)
    assert error.status_code == 422
    assert detail in error.detail


def test_labels_out_of_range_name_value_and_split(files: Path, store: LocalBlobStore, limits: IngestLimits) -> None:
    val = small_npz_arrays(counts=(2, 2))
    val_labels = val["train_labels"].copy()
    val_labels[0] = 5
    path = _npz(files, val_images=val["train_images"], val_labels=val_labels, class_names=np.array(["a", "b"]))
    error = rejected(path, store=store, limits=limits)
    assert error.status_code == 422
    assert "split 'val' has label 5 outside 0..1" in error.detail


def test_split_with_other_image_shape_is_named(files: Path, store: LocalBlobStore, limits: IngestLimits) -> None:
    path = _npz(files, test_images=np.zeros((4, 5, 5), np.uint8), test_labels=np.array([0, 1, 0, 1]))
    error = rejected(path, store=store, limits=limits)
    assert error.status_code == 422 and "split 'test' has images of shape (5, 5, 1)" in error.detail


def test_too_few_images_to_carve_names_the_class(files: Path, store: LocalBlobStore, limits: IngestLimits) -> None:
    path = write_npz(files / "d.npz", **small_npz_arrays(counts=(10, 2)))
    error = rejected(path, store=store, limits=limits)
    assert error.status_code == 422
    assert error.detail == "too few images in class '1' (2 in train) to make a test split"


def test_meta_json_is_plain_json(pneumonia_npz: Path, store: LocalBlobStore, limits: IngestLimits) -> None:
    ingest(pneumonia_npz, store=store, limits=limits, dataset_id="m")
    with store.open_read("datasets/m/meta.json") as handle:
        meta = json.load(handle)
    assert set(meta) >= {"class_names", "image_shape", "splits", "imbalance_ratio", "format", "notes"}
