"""Segmentation masks beside npz images: validated at upload, stored canonically, carved with their images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from ingest_support import ingest, rejected
from wellformed import small_npz_arrays, write_npz

from service.ingest import IngestLimits, load_canonical, load_masks
from service.storage import LocalBlobStore


def _with_masks(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Class-1 images carry a 2×2 object whose position encodes the image's index; class 0 has empty masks."""
    labels = arrays["train_labels"][:, 0]
    masks = np.zeros((len(labels), 6, 6), dtype=np.uint8)
    for index in np.flatnonzero(labels == 1):
        masks[index, index % 4 : index % 4 + 2, 1:3] = 1
    return {**arrays, "train_masks": masks}


def test_masks_are_stored_and_follow_their_images_into_carved_splits(
    files: Path, store: LocalBlobStore, limits: IngestLimits
) -> None:
    arrays = _with_masks(small_npz_arrays(counts=(20, 10)))
    result = ingest(write_npz(files / "masked.npz", **arrays), store=store, limits=limits, dataset_id="m")
    staging = store.root.parent / "run"
    masks, data = load_masks(store, "datasets/m", staging=staging), load_canonical(store, "datasets/m", staging=staging)
    assert set(masks) == {"train", "val", "test"}  # val and test were carved from train, masks with them
    total = 0
    for split in ("train", "val", "test"):
        images, labels = data[split]
        assert masks[split].shape == images.shape[:3]
        assert (masks[split].reshape(len(labels), -1).any(axis=1) == (labels == 1)).all()
        total += len(labels)
        assert result.summary["splits"][split]["masked_class_counts"] == [0, int((labels == 1).sum())]
    assert total == 30


def test_uploads_without_masks_report_none(files: Path, store: LocalBlobStore, limits: IngestLimits) -> None:
    result = ingest(write_npz(files / "plain.npz", **small_npz_arrays()), store=store, limits=limits)
    assert "masked_class_counts" not in result.summary["splits"]["train"]
    assert load_masks(store, "datasets/ds1", staging=store.root.parent / "run") == {}


def test_bad_masks_are_422_naming_the_member(files: Path, store: LocalBlobStore, limits: IngestLimits) -> None:
    arrays = _with_masks(small_npz_arrays())
    grey = {**arrays, "train_masks": arrays["train_masks"] * 255}
    error = rejected(write_npz(files / "grey.npz", **grey), store=store, limits=limits)
    assert error.status_code == 422 and "train_masks is not binary" in error.detail
    wrong = {**arrays, "train_masks": arrays["train_masks"][:, :5]}
    error = rejected(write_npz(files / "shape.npz", **wrong), store=store, limits=limits)
    assert "train_masks has shape" in error.detail and "one mask per image" in error.detail
    lonely = {**small_npz_arrays(), "val_masks": np.zeros((3, 6, 6), dtype=np.uint8)}
    error = rejected(write_npz(files / "lonely.npz", **lonely), store=store, limits=limits)
    assert "val_masks but no val_images" in error.detail


def _png(array: np.ndarray) -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def _zip(path: Path, entries: dict[str, bytes]) -> Path:
    import zipfile

    with zipfile.ZipFile(path, "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return path


def _folder_entries(mask_value: int = 255) -> dict[str, bytes]:
    entries = {}
    for split, count in (("train", 6), ("val", 2), ("test", 2)):
        for cls in ("a", "b"):
            for i in range(count):
                entries[f"{split}/{cls}/{i}.png"] = _png(np.full((8, 8), 40 if cls == "a" else 200, dtype=np.uint8))
    mask = np.zeros((8, 8), dtype=np.uint8)
    mask[2:4, 3:6] = mask_value
    entries["masks/train/b/0.png"] = _png(mask)
    entries["masks/train/b/1.png"] = _png(mask)
    return entries


def test_zip_masks_sit_under_masks_with_the_images_relative_path(
    files: Path, store: LocalBlobStore, limits: IngestLimits
) -> None:
    result = ingest(_zip(files / "folders.zip", _folder_entries()), store=store, limits=limits, dataset_id="z")
    assert result.summary["class_names"] == ["a", "b"]  # masks/ is not taken for a class or split folder
    assert result.summary["splits"]["train"]["masked_class_counts"] == [0, 2]
    masks = load_masks(store, "datasets/z", staging=store.root.parent / "run")
    assert int(masks["train"].sum()) == 2 * 6 and set(np.unique(masks["train"]).tolist()) == {0, 1}
    assert int(masks["val"].sum()) == 0


def test_zip_masks_that_are_not_binary_or_not_the_images_size_are_422_naming_the_file(
    files: Path, store: LocalBlobStore, limits: IngestLimits
) -> None:
    entries = _folder_entries(mask_value=128)
    error = rejected(_zip(files / "grey.zip", entries), store=store, limits=limits)
    assert error.status_code == 422 and "'masks/train/b/0.png' is not binary" in error.detail
    entries = _folder_entries()
    entries["masks/train/b/1.png"] = _png(np.zeros((4, 4), dtype=np.uint8))
    error = rejected(_zip(files / "small.zip", entries), store=store, limits=limits)
    assert "'masks/train/b/1.png' must be a greyscale image of its image's size" in error.detail


def test_a_16_bit_mask_of_0_and_65535_is_binary_and_does_not_widen_the_images(
    files: Path, store: LocalBlobStore, limits: IngestLimits
) -> None:
    entries = _folder_entries()
    mask = np.zeros((8, 8), dtype=np.uint16)
    mask[2:4, 3:6] = 65535
    entries["masks/train/b/0.png"] = _png(mask // 2)  # 0/32767: not binary at 16 bits
    error = rejected(_zip(files / "half.zip", entries), store=store, limits=limits)
    assert "'masks/train/b/0.png' is not binary" in error.detail
    entries["masks/train/b/0.png"] = _png(mask)
    result = ingest(_zip(files / "wide.zip", entries), store=store, limits=limits, dataset_id="w")
    assert result.summary["pixel_bits"] == 8  # a mask is not an image of the dataset
    masks = load_masks(store, "datasets/w", staging=store.root.parent / "run")
    assert masks["train"].dtype == np.uint8 and int(masks["train"].sum()) == 2 * 6
