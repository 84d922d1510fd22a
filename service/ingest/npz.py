"""MedMNIST-layout ``.npz`` -> ``DecodedDataset``.

Members: ``train_images`` / ``train_labels`` (required), ``val_*`` / ``test_*``
(optional, in pairs), ``class_names`` (optional unicode array). Images are
``(N, H, W)`` or ``(N, H, W, C)`` with C 1 or 3, uint8 or uint16 (16-bit:
kept at all 16 bits, and the other splits widened to match, see
``service.imaging.depth``; other integer dtypes with values in 0..255 are cast
to uint8); labels ``(N,)`` or ``(N, 1)`` integers.

The archive is checked before numpy touches it: the central directory (entry
count, declared sizes, compression ratio) and every needed member's ``.npy``
header (no object dtype, and the declared shape must fit in the member's
bytes, so a lying header cannot make numpy allocate a huge array).
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from service.imaging.depth import PIXEL_DTYPES, at_depth, common_dtype
from service.ingest.archive import EntryTally, check_zip_entry, collect_members
from service.ingest.dataset import SPLITS, DecodedDataset
from service.ingest.errors import DatasetRejected, safe_name
from service.ingest.limits import IngestLimits
from service.ingest.zipscan import preflight_zip


def _check_header(archive: zipfile.ZipFile, info: zipfile.ZipInfo, key: str) -> None:
    with archive.open(info) as handle:
        try:
            version = np.lib.format.read_magic(handle)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(handle)
            elif version == (2, 0):
                shape, _, dtype = np.lib.format.read_array_header_2_0(handle)
            else:
                raise DatasetRejected(422, f"member {key!r} uses .npy format {version}; only 1.0 and 2.0 are read")
        except ValueError as exc:
            raise DatasetRejected(422, f"member {key!r} is not a valid .npy array: {exc}") from exc
    if dtype.hasobject:
        raise DatasetRejected(
            422,
            f"member {key!r} is an object array (pickled Python objects); only numeric arrays are accepted",
        )
    needed = int(np.prod(shape, dtype=np.float64)) * dtype.itemsize
    if needed > info.file_size:
        raise DatasetRejected(
            422,
            f"member {key!r} declares shape {tuple(shape)} ({needed} bytes) but holds only {info.file_size}",
        )


def _present_keys(path: Path, *, limits: IngestLimits, label: str) -> tuple[list[str], list[str]]:
    """(array keys to load, ignored member names), after checking the whole archive."""
    preflight_zip(path, max_entries=limits.max_archive_entries, label=label)
    tally = EntryTally(limits, label)
    with zipfile.ZipFile(path) as archive:
        # Duplicates are refused: numpy must load the very member whose header was checked.
        members = collect_members(check_zip_entry(info, tally) for info in archive.infolist())
        by_key = {m.name.removesuffix(".npy"): m.ref for m in members if m.name.endswith(".npy")}
        wanted = [f"{split}_{part}" for split in SPLITS for part in ("images", "labels", "masks")] + ["class_names"]
        keys = [key for key in wanted if key in by_key]
        for key in keys:
            _check_header(archive, by_key[key], key)
    ignored = [m.name for m in members if m.name.removesuffix(".npy") not in keys]
    return keys, ignored


def _images(array: np.ndarray, split: str) -> np.ndarray:
    key = f"{split}_images"
    if array.dtype.kind not in "ui":
        raise DatasetRejected(
            422, f"{key} has dtype {array.dtype}; expected uint8, uint16 (16-bit) or integers in 0..255"
        )
    if array.ndim == 3:
        array = array[..., None]
    if array.ndim != 4 or array.shape[-1] not in (1, 3) or min(array.shape[1:3], default=0) < 1:
        raise DatasetRejected(422, f"{key} has shape {array.shape}; expected (N, H, W) or (N, H, W, C) with C = 1 or 3")
    array = array.astype(array.dtype.newbyteorder("="), copy=False)  # a big-endian '>u2' is uint16 too
    if array.dtype not in PIXEL_DTYPES:
        if array.size and (array.min() < 0 or array.max() > 255):
            raise DatasetRejected(
                422, f"{key} has values outside 0..255 (dtype {array.dtype}); send 16-bit images as uint16"
            )
        array = array.astype(np.uint8)
    return np.ascontiguousarray(array)


def _labels(array: np.ndarray, split: str, count: int) -> np.ndarray:
    key = f"{split}_labels"
    if array.dtype.kind not in "ui":
        raise DatasetRejected(422, f"{key} has dtype {array.dtype}; expected integer class indices")
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim != 1:
        raise DatasetRejected(422, f"{key} has shape {array.shape}; expected (N,) or (N, 1)")
    if len(array) != count:
        raise DatasetRejected(422, f"{key} has {len(array)} labels but {split}_images has {count} images")
    if array.dtype.kind == "u" and array.size and array.max() > np.iinfo(np.int64).max:
        raise DatasetRejected(422, f"{key} has label {array.max()} outside the int64 range")
    return array.astype(np.int64)


def _masks(array: np.ndarray, split: str, shape: tuple[int, ...]) -> np.ndarray:
    """Segmentation masks beside the images: ``(N, H, W)`` of 0/1 (bool or integers)."""
    key = f"{split}_masks"
    if array.dtype.kind not in "uib":
        raise DatasetRejected(422, f"{key} has dtype {array.dtype}; expected uint8 0/1 (or bool)")
    if array.ndim == 4 and array.shape[-1] == 1:
        array = array[..., 0]
    if tuple(array.shape) != tuple(shape):
        raise DatasetRejected(422, f"{key} has shape {array.shape}; expected {tuple(shape)}, one mask per image")
    if array.size and not np.isin(array, (0, 1)).all():
        raise DatasetRejected(422, f"{key} is not binary: masks hold 0 (background) and 1 (object) only")
    return np.ascontiguousarray(array, dtype=np.uint8)


def _class_names(array: np.ndarray | None, labels: list[np.ndarray]) -> list[str]:
    if array is None:
        top = max((int(split.max()) for split in labels if split.size), default=-1)
        return [str(i) for i in range(top + 1)]
    if array.dtype.kind not in "US" or array.ndim != 1:
        raise DatasetRejected(422, f"class_names must be a 1-D string array, got {array.dtype} {array.shape}")
    names = [n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in array.tolist()]
    if any(not name.strip() for name in names) or len(set(names)) != len(names):
        raise DatasetRejected(
            422, f"class_names must be distinct non-empty strings, got {[safe_name(n) for n in names]}"
        )
    return names


def parse_npz(path: Path, *, limits: IngestLimits, label: str) -> DecodedDataset:
    """Read a MedMNIST-layout npz; splits it does not have are left for carving."""
    keys, ignored = _present_keys(path, limits=limits, label=label)
    with np.load(path, allow_pickle=False) as npz:
        arrays = {key: npz[key] for key in keys}
    splits, masks = {}, {}
    for split in SPLITS:
        has_images, has_labels = f"{split}_images" in arrays, f"{split}_labels" in arrays
        if split == "train" and not (has_images and has_labels):
            raise DatasetRejected(422, f"{label} lacks train_images and/or train_labels (MedMNIST layout)")
        if has_images != has_labels:
            present, missing = ("images", "labels") if has_images else ("labels", "images")
            raise DatasetRejected(422, f"{label} has {split}_{present} but no {split}_{missing}")
        if has_images:
            images = _images(arrays[f"{split}_images"], split)
            splits[split] = (images, _labels(arrays[f"{split}_labels"], split, len(images)))
            if f"{split}_masks" in arrays:
                masks[split] = _masks(arrays[f"{split}_masks"], split, images.shape[:3])
        elif f"{split}_masks" in arrays:
            raise DatasetRejected(422, f"{label} has {split}_masks but no {split}_images")
    depth = common_dtype(images.dtype for images, _ in splits.values())
    splits = {split: (at_depth(images, depth), labels) for split, (images, labels) in splits.items()}
    names = _class_names(arrays.get("class_names"), [labels for _, labels in splits.values()])
    notes = [f"ignored members not in the MedMNIST layout: {', '.join(map(safe_name, ignored))}"] if ignored else []
    shape = tuple(int(d) for d in splits["train"][0].shape[1:])
    return DecodedDataset(format="npz", class_names=names, image_shape=shape, splits=splits, notes=notes, masks=masks)  # type: ignore[arg-type]
