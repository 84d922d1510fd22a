"""Well-formed image archives: ImageFolder zip / tar.gz, labels.csv, mixed sizes and modes."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from hostile import zip_non_utf8_names
from ingest_support import ingest, leftover_files
from PIL import Image
from wellformed import class_value, folder_entries, png_bytes, write_tar, write_zip

from service.ingest import IngestLimits, ingest_file, load_canonical
from service.storage import LocalBlobStore


def _assert_labels_match_pixels(decoded) -> None:
    for split, (images, labels) in decoded.splits.items():
        expected = [class_value(int(k)) for k in labels]
        assert images[:, 0, 0, 0].tolist() == expected, split


def test_imagefolder_zip_with_explicit_splits(files: Path, store: LocalBlobStore, limits: IngestLimits) -> None:
    entries = {
        **folder_entries({"cat": 6, "dog": 3}, split="train"),
        **folder_entries({"cat": 2, "dog": 1}, split="val"),
        **folder_entries({"cat": 1, "dog": 2}, split="test"),
    }
    path = write_zip(files / "pets.zip", entries)
    result = ingest(path, store=store, limits=limits, dataset_id="pets")
    assert result.format == "imagefolder"
    assert result.summary["class_names"] == ["cat", "dog"]
    assert result.summary["image_shape"] == [8, 8, 1]
    assert {s: v["class_counts"] for s, v in result.summary["splits"].items()} == {
        "train": [6, 3],
        "val": [2, 1],
        "test": [1, 2],
    }
    assert result.summary["imbalance_ratio"] == 2.0
    arrays = load_canonical(store, "datasets/pets", staging=store.root.parent / "run")
    for images, labels in arrays.values():
        assert images[:, 0, 0, 0].tolist() == [class_value(int(k)) for k in labels]


def test_top_level_class_folders_are_split_80_10_10(files: Path, limits: IngestLimits) -> None:
    path = write_zip(files / "x.zip", folder_entries({"a": 20, "b": 10}, split=None))
    decoded = ingest_file(path, filename="x.zip", limits=limits)
    assert decoded.class_counts("train") == [16, 8]
    assert decoded.class_counts("val") == [2, 1]
    assert decoded.class_counts("test") == [2, 1]
    _assert_labels_match_pixels(decoded)


def test_wrapping_folder_junk_and_loose_files_are_looked_through(files: Path, limits: IngestLimits) -> None:
    entries = {f"mydata/{k}": v for k, v in folder_entries({"a": 3, "b": 3}).items()}
    entries.update(
        {
            "mydata/README.md": b"# notes",
            "__MACOSX/mydata/train/a/._0.png": b"junk",
            "mydata/train/a/.DS_Store": b"junk",
            "mydata/train/b/Thumbs.db": b"junk",
            "mydata/val/a/0.png": png_bytes(value=class_value(0)),
            "mydata/val/b/0.png": png_bytes(value=class_value(1)),
        }
    )
    decoded = ingest_file(write_zip(files / "x.zip", entries), filename="x.zip", limits=limits)
    counts = [decoded.class_counts(s) for s in ("train", "val", "test")]
    assert counts == [[2, 2], [1, 1], [1, 1]]  # test carved from the 3 train images per class
    assert any("ignored 1 loose files" in note for note in decoded.notes)


def test_labels_csv_zip(files: Path, store: LocalBlobStore, limits: IngestLimits) -> None:
    rows = ["path,label,split"]
    entries = {}
    for i in range(12):
        label = "sick" if i % 3 == 0 else "healthy"
        split = "test" if i in (10, 11) else "val" if i in (8, 9) else "train"
        entries[f"data/img/{i}.png"] = png_bytes(value=class_value(["healthy", "sick"].index(label)))
        rows.append(f"img/{i}.png,{label},{split}")
    entries["data/labels.csv"] = ("\n".join(rows) + "\n").encode()
    entries["data/img/unlisted.png"] = png_bytes()
    result = ingest(write_zip(files / "csv.zip", entries), store=store, limits=limits)
    assert result.format == "labels_csv"
    assert result.summary["class_names"] == ["healthy", "sick"]
    assert {s: v["count"] for s, v in result.summary["splits"].items()} == {"train": 8, "val": 2, "test": 2}
    assert "ignored 1 files not listed in labels.csv" in result.notes
    decoded = load_canonical(store, "datasets/ds1", staging=store.root.parent / "run", mmap=False)
    for images, labels in decoded.values():
        assert images[:, 0, 0, 0].tolist() == [class_value(int(k)) for k in labels]


def test_labels_csv_without_header_or_split_is_carved(files: Path, limits: IngestLimits) -> None:
    entries = {f"{i}.png": png_bytes(value=class_value(i % 2)) for i in range(20)}
    entries["labels.csv"] = "".join(f"{i}.png,{i % 2}\n" for i in range(20)).encode()
    decoded = ingest_file(write_zip(files / "c.zip", entries), filename="c.zip", limits=limits)
    assert decoded.format == "labels_csv" and decoded.class_names == ["0", "1"]
    assert [decoded.class_counts(s) for s in ("train", "val", "test")] == [[8, 8], [1, 1], [1, 1]]
    _assert_labels_match_pixels(decoded)


@pytest.mark.parametrize("gz", [True, False])
def test_tar_imagefolder(files: Path, store: LocalBlobStore, limits: IngestLimits, gz: bool) -> None:
    entries = {**folder_entries({"x": 5, "y": 4}), **folder_entries({"x": 1, "y": 1}, split="val")}
    name = "set.tar.gz" if gz else "set.tar"
    result = ingest(write_tar(files / name, entries, gz=gz), store=store, limits=limits)
    assert result.format == "imagefolder"
    assert result.summary["splits"]["train"]["class_counts"] == [4, 3]  # 10% of each class carved to test
    assert result.summary["splits"]["test"]["class_counts"] == [1, 1]
    assert result.summary["splits"]["val"]["class_counts"] == [1, 1]


def test_mixed_sizes_are_resized_to_the_most_common_with_a_note(files: Path, limits: IngestLimits) -> None:
    entries = folder_entries({"a": 4, "b": 4}, size=(8, 6))  # width 8, height 6
    entries["train/a/big.png"] = png_bytes(size=(16, 20), value=class_value(0))
    entries["train/b/small.png"] = png_bytes(size=(3, 3), value=class_value(1))
    decoded = ingest_file(write_zip(files / "m.zip", entries), filename="m.zip", limits=limits)
    assert decoded.image_shape == (6, 8, 1)
    assert "resized 2 of 10 images to 6x8 (the most common size), bilinear" in decoded.notes
    _assert_labels_match_pixels(decoded)  # uniform images stay uniform when resized


def test_rgb_and_grey_mixed_become_rgb(files: Path, limits: IngestLimits) -> None:
    entries = folder_entries({"a": 4, "b": 4}, ext="bmp")
    entries["train/a/colour.png"] = png_bytes(mode="RGB", value=(class_value(0), 0, 255))
    entries["train/b/grey_as_rgb.jpg"] = png_bytes(mode="RGB", value=(90, 90, 90), fmt="JPEG")
    decoded = ingest_file(write_zip(files / "c.zip", entries), filename="c.zip", limits=limits)
    assert decoded.image_shape == (8, 8, 3)
    images, labels = decoded.splits["train"]
    grey = images[labels == 1]
    assert np.all(grey[..., 0] == grey[..., 1]) and np.all(grey[..., 1] == grey[..., 2])
    assert any("converted" in note and "to RGB" in note for note in decoded.notes)


def _grey_variants(value: int) -> list[bytes]:
    """The same grey level as RGB, palette, grey+alpha and 16-bit PNGs."""
    palette = io.BytesIO()
    Image.new("L", (8, 8), value).convert("P").save(palette, format="PNG")
    return [
        png_bytes(mode="RGB", value=(value, value, value)),
        palette.getvalue(),
        png_bytes(mode="LA", value=(value, 128)),
        png_bytes(mode="I;16", value=value * 257),
    ]


def test_grey_images_in_any_mode_stay_single_channel(files: Path, limits: IngestLimits) -> None:
    entries = {
        f"train/{c}/{i}.png": data
        for index, c in enumerate("ab")
        for i, data in enumerate(_grey_variants(class_value(index)) * 2)
    }
    decoded = ingest_file(write_zip(files / "g.zip", entries), filename="g.zip", limits=limits)
    assert decoded.image_shape == (8, 8, 1)
    for images, labels in decoded.splits.values():
        # One 16-bit image makes the dataset 16-bit: the 8-bit ones are widened by 257 to match it.
        assert images.dtype == np.uint16
        assert np.all(images == 257 * np.array([class_value(int(k)) for k in labels])[:, None, None, None])
    assert any("stored 12 8-bit images as 16 bits" in note for note in decoded.notes)


def test_non_utf8_entry_names_are_accepted(files: Path, limits: IngestLimits) -> None:
    path = zip_non_utf8_names(files / "n.zip", raw=b"\xff\x81", image=png_bytes(value=class_value(0)))
    decoded = ingest_file(path, filename="n.zip", limits=limits)
    totals = np.sum([decoded.class_counts(s) for s in ("train", "val", "test")], axis=0)
    assert totals.tolist() == [5, 4]  # the oddly named image counts as a cat


def test_store_root_only_holds_the_dataset(files: Path, store: LocalBlobStore, limits: IngestLimits) -> None:
    ingest(write_zip(files / "p.zip", folder_entries({"a": 3, "b": 3}, split=None)), store=store, limits=limits)
    expected = [f"datasets/ds1/{s}_{p}.npy" for s in ("train", "val", "test") for p in ("images", "labels")]
    assert leftover_files(store.root) == sorted([*expected, "datasets/ds1/meta.json"])
