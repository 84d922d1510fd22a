"""Builders for well-formed uploads (small PNGs in zips, tars and npz files), made at test time.

Every image is uniform with a grey level that encodes its class
(``class_value``), so a test can check each decoded label against its pixels.
"""

from __future__ import annotations

import io
import tarfile
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

SIZE = (8, 8)  # (width, height)


def class_value(index: int) -> int:
    return 40 + 60 * index


def png_bytes(*, size: tuple[int, int] = SIZE, mode: str = "L", value: int | tuple = 0, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, value).save(buffer, format=fmt)
    return buffer.getvalue()


def folder_entries(
    classes: dict[str, int], *, split: str | None = "train", size: tuple[int, int] = SIZE, ext: str = "png"
) -> dict[str, bytes]:
    """``{split}/{class}/{i}.png`` (or ``{class}/{i}.png`` when split is None), class-coded grey levels."""
    entries = {}
    for index, (name, count) in enumerate(sorted(classes.items())):
        for i in range(count):
            folder = f"{split}/{name}" if split else name
            fmt = {"png": "PNG", "bmp": "BMP", "jpg": "JPEG"}[ext]
            entries[f"{folder}/{i}.{ext}"] = png_bytes(size=size, value=class_value(index), fmt=fmt)
    return entries


def write_zip(path: Path, entries: dict[str, bytes], *, compression: int = zipfile.ZIP_DEFLATED) -> Path:
    with zipfile.ZipFile(path, "w", compression=compression) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return path


def write_tar(path: Path, entries: dict[str, bytes], *, gz: bool = True) -> Path:
    with tarfile.open(path, "w:gz" if gz else "w") as archive:
        for name, data in entries.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


def write_npz(path: Path, **arrays: np.ndarray) -> Path:
    with open(path, "wb") as handle:  # a file handle keeps numpy from appending ".npz"
        np.savez_compressed(handle, **arrays)
    return path


def small_npz_arrays(*, counts: tuple[int, ...] = (12, 6), seed: int = 0) -> dict[str, np.ndarray]:
    """train_images (N, 6, 6) uint8 and train_labels (N, 1), class-coded grey levels."""
    labels = np.concatenate([np.full(n, k) for k, n in enumerate(counts)]).astype(np.uint8)
    labels = np.random.default_rng(seed).permutation(labels)
    images = np.stack([np.full((6, 6), class_value(int(k)), dtype=np.uint8) for k in labels])
    return {"train_images": images, "train_labels": labels[:, None]}
