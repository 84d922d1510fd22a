"""Checks a decoded dataset must pass before it is stored (each failure is a 422 naming the problem)."""

from __future__ import annotations

from service.imaging.depth import PIXEL_DTYPES
from service.ingest.dataset import DecodedDataset
from service.ingest.errors import DatasetRejected, safe_name


def _check_split(decoded: DecodedDataset, split: str) -> None:
    images, labels = decoded.splits[split]
    if images.dtype not in PIXEL_DTYPES or images.ndim != 4:
        raise DatasetRejected(
            422, f"split {split!r} images are {images.dtype} {images.shape}, not uint8 or uint16 (N, H, W, C)"
        )
    if images.dtype != decoded.splits["train"][0].dtype:
        raise DatasetRejected(
            422, f"split {split!r} images are {images.dtype} but train images are {decoded.splits['train'][0].dtype}"
        )
    if tuple(images.shape[1:]) != tuple(decoded.image_shape):
        raise DatasetRejected(
            422,
            f"split {split!r} has images of shape {tuple(images.shape[1:])} (H, W, C) "
            f"but train has {tuple(decoded.image_shape)}",
        )
    if len(labels) != len(images):
        raise DatasetRejected(422, f"split {split!r} has {len(images)} images but {len(labels)} labels")
    if len(labels) == 0:
        raise DatasetRejected(422, f"split {split!r} has no images")
    outside = labels[(labels < 0) | (labels >= decoded.num_classes)]
    if outside.size:
        raise DatasetRejected(
            422,
            f"split {split!r} has label {int(outside[0])} outside 0..{decoded.num_classes - 1} "
            f"({decoded.num_classes} classes)",
        )


def _check_train_classes(decoded: DecodedDataset) -> None:
    counts = decoded.class_counts("train")
    for index, count in enumerate(counts):
        if count:
            continue
        name = safe_name(decoded.class_names[index])
        elsewhere = [s for s in decoded.splits if s != "train" and index in decoded.splits[s][1]]
        where = f" (it appears only in {', '.join(elsewhere)})" if elsewhere else ""
        raise DatasetRejected(422, f"class {name} has no train images{where}")


def validate_decoded(decoded: DecodedDataset) -> None:
    """At least 2 classes; every split non-empty with train's image shape and labels in range;
    every class has train images. Raises ``DatasetRejected`` 422."""
    if "train" not in decoded.splits:
        raise DatasetRejected(422, "the dataset has no train split")
    if decoded.num_classes < 2:
        found = ", ".join(safe_name(n) for n in decoded.class_names) or "none"
        raise DatasetRejected(
            422, f"the dataset has {decoded.num_classes} class ({found}); at least 2 classes are needed"
        )
    for split in decoded.splits:
        _check_split(decoded, split)
    _check_train_classes(decoded)
