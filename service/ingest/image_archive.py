"""Zip / tar / tar.gz of image files (ImageFolder or labels.csv) -> ``DecodedDataset``.

Optional segmentation masks: ``masks/<the image's path in the archive>`` (a
greyscale image of 0/1 or 0/255 — 0/65535 if 16-bit — the image's size). Images without one get an
empty mask; an archive without ``masks/`` has no masks.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from PIL import Image

from service.imaging.depth import full_scale
from service.ingest.archive import Member, SafeArchive, open_archive
from service.ingest.dataset import SPLITS, DecodedDataset
from service.ingest.errors import DatasetRejected, mib, safe_name
from service.ingest.images import decode_image, stack_images
from service.ingest.layout import Item, Layout, find_labels_csv, plan_folders, plan_labels_csv
from service.ingest.limits import IngestLimits

logger = logging.getLogger(__name__)


MASKS_DIR = "masks/"


def _plan(archive: SafeArchive, members: list[Member]) -> Layout:
    csv_member = find_labels_csv(members)
    if csv_member is None:
        return plan_folders(members)
    try:
        text = archive.read(csv_member).decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DatasetRejected(422, f"{safe_name(csv_member.name)} is not UTF-8 text") from exc
    return plan_labels_csv(members, csv_member=csv_member, text=text)


def _decode_all(archive: SafeArchive, members: list[Member], limits: IngestLimits) -> list[np.ndarray]:
    """Decode every member's image, in archive order (forward-only reads for tar.gz)."""
    position = {member.name: index for index, member in enumerate(archive.members)}
    order = sorted(range(len(members)), key=lambda i: position[members[i].name])
    arrays: list[np.ndarray | None] = [None] * len(members)
    decoded_bytes = 0
    for index in order:
        member = members[index]
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
        mask_members = {m.name.removeprefix(MASKS_DIR): m for m in archive.members if m.name.startswith(MASKS_DIR)}
        layout = _plan(archive, [m for m in archive.members if not m.name.startswith(MASKS_DIR)])
        masked = [item for item in layout.items if item.member.name in mask_members]
        arrays = _decode_all(
            archive, [item.member for item in layout.items] + [mask_members[i.member.name] for i in masked], limits
        )
    images, notes = stack_images(arrays[: len(layout.items)])
    index = {name: i for i, name in enumerate(layout.class_names)}
    labels = np.array([index[item.class_name] for item in layout.items], dtype=np.int64)
    logger.info("decoded %d images in %d classes from %s", len(labels), len(index), label)
    return DecodedDataset(
        format=layout.format,
        class_names=layout.class_names,
        image_shape=tuple(int(d) for d in images.shape[1:]),  # type: ignore[arg-type]
        splits=_split_arrays(layout.items, images, labels),
        notes=layout.notes + notes,
        masks=_masks(layout.items, arrays, masked, images.shape[1:3]) if mask_members else {},
    )


def _masks(items: list[Item], arrays: list[np.ndarray], masked: list[Item], size: tuple[int, int]) -> dict:
    """Per split ``(N, H, W)`` 0/1 masks; each checked against its own image and resized with it (nearest)."""
    by_name = dict(zip((item.member.name for item in masked), arrays[len(items) :], strict=True))
    out = np.zeros((len(items), *size), dtype=np.uint8)
    for index, (item, image) in enumerate(zip(items, arrays, strict=False)):
        mask = by_name.get(item.member.name)
        if mask is None:
            continue
        name = safe_name(MASKS_DIR + item.member.name)
        if mask.ndim != 2 or mask.shape != image.shape[:2]:
            raise DatasetRejected(
                422, f"mask {name} must be a greyscale image of its image's size {image.shape[:2]}, got {mask.shape}"
            )
        values = set(np.unique(mask).tolist())
        if not (values <= {0, 1} or values <= {0, full_scale(mask.dtype)}):
            raise DatasetRejected(422, f"mask {name} is not binary: use 0/1 or 0/255 (16-bit: 0/65535) only")
        binary = (mask > 0).astype(np.uint8)
        if binary.shape != size:
            binary = np.asarray(Image.fromarray(binary).resize(size[::-1], Image.Resampling.NEAREST), dtype=np.uint8)
        out[index] = binary
    names = [item.split or "train" for item in items]
    return {split: out[[n == split for n in names]] for split in SPLITS if split in names}
