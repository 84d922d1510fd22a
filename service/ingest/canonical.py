"""The canonical, decoded-once form of a dataset in the blob store, and its summary.

Layout under ``prefix`` (``datasets/{dataset_id}``): ``{split}_images.npy``
uint8 ``(N, H, W, C)`` C-contiguous (uint16 for a dataset with 16-bit images,
``pixel_bits`` in the summary), ``{split}_labels.npy`` int64 ``(N,)`` for
train, val and test, and ``meta.json`` (written last, so its presence means
the set is complete; it records each array's size and sha256). Workers copy
the arrays into their own staging folder, checking each hash, and
memory-map them there; nothing is ever decoded per job, nor unpickled.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from service.imaging.depth import PIXEL_DTYPES, pixel_bits
from service.ingest.dataset import SPLITS, DecodedDataset
from service.models import Dataset
from service.spec import JobSpec
from service.storage import BlobStore
from service.violations import dataset_violations

logger = logging.getLogger(__name__)

META_VERSION = 1


@dataclass(frozen=True)
class StoredDataset:
    size_bytes: int
    meta: dict


def summarize(decoded: DecodedDataset) -> dict:
    """The API's dataset fields: num_classes, class_names, image_shape, pixel_bits, splits, imbalance_ratio.

    ``pixel_bits`` is 8 (uint8 arrays) or 16 (uint16). ``imbalance_ratio`` is
    the largest over the smallest train class count, rounded to 2 decimals.
    """
    train_counts = decoded.class_counts("train")
    smallest = min(train_counts)
    return {
        "num_classes": decoded.num_classes,
        "class_names": list(decoded.class_names),
        "image_shape": [int(d) for d in decoded.image_shape],
        "pixel_bits": pixel_bits(decoded.splits["train"][0].dtype),
        "splits": {split: _split_summary(decoded, split) for split in SPLITS if split in decoded.splits},
        "imbalance_ratio": round(max(train_counts) / smallest, 2) if smallest else float("inf"),
    }


def _split_summary(decoded: DecodedDataset, split: str) -> dict:
    summary: dict = {"count": int(len(decoded.splits[split][1])), "class_counts": decoded.class_counts(split)}
    masked = decoded.masked_class_counts(split)
    if masked is not None:
        summary["masked_class_counts"] = masked
    return summary


def mask_classes(splits: dict) -> list[int]:
    """Class indices with at least one masked train image, from a stored ``splits`` summary."""
    counts = (splits.get("train") or {}).get("masked_class_counts") or []
    return [index for index, count in enumerate(counts) if count > 0]


def stored_dataset_violations(spec: JobSpec, *, dataset: Dataset) -> list[tuple[tuple[str, ...], str]]:
    """``service.violations.dataset_violations`` against a stored dataset: its classes, masks and train counts."""
    names = [str(name) for name in dataset.class_names]
    return dataset_violations(
        spec,
        num_classes=dataset.num_classes,
        class_names=names,
        mask_classes=[names[index] for index in mask_classes(dataset.splits)],
        train_counts=(dataset.splits.get("train") or {}).get("class_counts"),
    )


def _arrays(decoded: DecodedDataset):
    for split in SPLITS:
        if split not in decoded.splits:
            raise ValueError(f"decoded dataset lacks the {split!r} split; run ingest_file first")
        images, labels = decoded.splits[split]
        if images.dtype not in PIXEL_DTYPES or images.ndim != 4:
            raise ValueError(f"{split} images must be uint8 or uint16 (N, H, W, C), got {images.dtype} {images.shape}")
        yield f"{split}_images.npy", np.ascontiguousarray(images)
        yield f"{split}_labels.npy", np.ascontiguousarray(labels, dtype=np.int64)
        if split in decoded.masks:
            yield f"{split}_masks.npy", np.ascontiguousarray(decoded.masks[split], dtype=np.uint8)


def store_canonical(decoded: DecodedDataset, *, store: BlobStore, prefix: str, scratch: Path) -> StoredDataset:
    """Write the canonical arrays and ``meta.json`` under ``prefix``; all or nothing.

    Each file is staged in a folder of its own under ``scratch`` and published;
    on any failure everything under ``prefix`` is deleted before the error
    propagates, and the staging folder always goes.
    """
    scratch.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix="canonical-", dir=scratch))
    files: dict[str, dict] = {}
    try:
        for name, array in _arrays(decoded):
            staged = staging / name
            np.save(staged, array, allow_pickle=False)
            info = store.publish(f"{prefix}/{name}", staged)
            files[name] = {"size": info.size, "sha256": info.sha256}
        meta = {
            "format_version": META_VERSION,
            "format": decoded.format,
            **summarize(decoded),
            "notes": list(decoded.notes),
            "files": files,
        }
        meta_info = store.write(f"{prefix}/meta.json", json.dumps(meta, indent=2).encode())
    except BaseException:
        store.delete(prefix)
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    size = sum(entry["size"] for entry in files.values()) + meta_info.size
    logger.info("stored canonical dataset under %s (%d bytes)", prefix, size)
    return StoredDataset(size_bytes=size, meta=meta)


def load_meta(store: BlobStore, prefix: str) -> dict:
    """The ``meta.json`` written by ``store_canonical``."""
    with store.open_read(f"{prefix}/meta.json") as handle:
        return json.load(handle)


def load_canonical(
    store: BlobStore, prefix: str, *, staging: Path, mmap: bool = True
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{split: (images uint8 or uint16 (N,H,W,C), labels int64 (N,))}``, memory-mapped read-only by default.

    The arrays are copied into ``staging`` (the caller's own folder, which it
    removes when done) and checked against the sha256 that ``meta.json``
    recorded (``BlobCorrupt`` on a mismatch).
    """
    files = _files(store, prefix)
    return {split: _split(store, prefix, files, split=split, staging=staging, mmap=mmap) for split in SPLITS}


def load_split(
    store: BlobStore, prefix: str, *, split: str, staging: Path, mmap: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """One split's ``(images, labels)``, staged and checked as :func:`load_canonical` does (for readers
    that need one split, such as the sample grid, without copying the other two)."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; one of {', '.join(SPLITS)}")
    return _split(store, prefix, _files(store, prefix), split=split, staging=staging, mmap=mmap)


def load_masks(store: BlobStore, prefix: str, *, staging: Path, mmap: bool = True) -> dict[str, np.ndarray]:
    """``{split: masks uint8 (N, H, W)}`` for the splits uploaded with masks, staged and checked as
    :func:`load_canonical` does."""
    files = load_meta(store, prefix)["files"]
    return {
        split: _stage(store, prefix, files, name=f"{split}_masks.npy", staging=staging, mmap=mmap)
        for split in SPLITS
        if f"{split}_masks.npy" in files
    }


def _files(store: BlobStore, prefix: str) -> dict:
    try:
        return load_meta(store, prefix)["files"]
    except FileNotFoundError:
        raise FileNotFoundError(f"no canonical dataset at {prefix!r}: meta.json is missing") from None


def _split(
    store: BlobStore, prefix: str, files: dict, *, split: str, staging: Path, mmap: bool
) -> tuple[np.ndarray, np.ndarray]:
    names = [f"{split}_images.npy", f"{split}_labels.npy"]
    for name in names:
        if name not in files:
            raise FileNotFoundError(f"no canonical dataset at {prefix!r}: {name!r} is missing")
    images, labels = (_stage(store, prefix, files, name=name, staging=staging, mmap=mmap) for name in names)
    return images, labels


def _stage(store: BlobStore, prefix: str, files: dict, *, name: str, staging: Path, mmap: bool) -> np.ndarray:
    staging.mkdir(parents=True, exist_ok=True)
    store.download(f"{prefix}/{name}", staging / name, sha256=files[name]["sha256"])
    return np.load(staging / name, mmap_mode="r" if mmap else None, allow_pickle=False)
