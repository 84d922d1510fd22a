"""Zip / tar / tar.gz of image files (ImageFolder or labels.csv) -> ``DecodedDataset``."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from service.ingest.archive import SafeArchive, open_archive
from service.ingest.dataset import SPLITS, DecodedDataset
from service.ingest.errors import DatasetRejected, mib, safe_name
from service.ingest.images import decode_image, stack_images
from service.ingest.layout import Item, Layout, find_labels_csv, plan_folders, plan_labels_csv
from service.ingest.limits import IngestLimits

logger = logging.getLogger(__name__)


def _plan(archive: SafeArchive) -> Layout:
    csv_member = find_labels_csv(archive.members)
    if csv_member is None:
        return plan_folders(archive.members)
    try:
        text = archive.read(csv_member).decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DatasetRejected(422, f"{safe_name(csv_member.name)} is not UTF-8 text") from exc
    return plan_labels_csv(archive.members, csv_member=csv_member, text=text)


def _decode_all(archive: SafeArchive, items: list[Item], limits: IngestLimits) -> list[np.ndarray]:
    """Decode every item's image, in archive order (forward-only reads for tar.gz)."""
    position = {member.name: index for index, member in enumerate(archive.members)}
    order = sorted(range(len(items)), key=lambda i: position[items[i].member.name])
    arrays: list[np.ndarray | None] = [None] * len(items)
    decoded_bytes = 0
    for index in order:
        member = items[index].member
        array = decode_image(archive.read(member), name=member.name, max_pixels=limits.max_image_pixels)
        decoded_bytes += array.nbytes
        if decoded_bytes > limits.max_expanded_bytes:
            raise DatasetRejected(
                413,
                f"the decoded images exceed the limit of {mib(limits.max_expanded_bytes)} "
                f"(reached at {safe_name(member.name)})",
            )
        arrays[index] = array
    return arrays  # type: ignore[return-value]


def _split_arrays(items: list[Item], images: np.ndarray, labels: np.ndarray) -> dict:
    names = [item.split or "train" for item in items]
    splits = {}
    for split in SPLITS:
        mask = np.array([name == split for name in names], dtype=bool)
        if mask.any():
            splits[split] = (np.ascontiguousarray(images[mask]), labels[mask])
    return splits


def parse_image_archive(path: Path, *, kind: str, limits: IngestLimits, label: str) -> DecodedDataset:
    """Read a zip/tar/tar.gz upload of images; splits not given are left for carving."""
    with open_archive(path, kind=kind, limits=limits, label=label) as archive:
        layout = _plan(archive)
        arrays = _decode_all(archive, layout.items, limits)
    images, notes = stack_images(arrays)
    index = {name: i for i, name in enumerate(layout.class_names)}
    labels = np.array([index[item.class_name] for item in layout.items], dtype=np.int64)
    logger.info("decoded %d images in %d classes from %s", len(labels), len(index), label)
    return DecodedDataset(
        format=layout.format,
        class_names=layout.class_names,
        image_shape=tuple(int(d) for d in images.shape[1:]),  # type: ignore[arg-type]
        splits=_split_arrays(layout.items, images, labels),
        notes=layout.notes + notes,
    )
