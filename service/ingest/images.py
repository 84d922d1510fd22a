"""Decoded upload images stacked into one array (decoding itself: ``service.imaging``)."""

from __future__ import annotations

import logging
from collections import Counter

import numpy as np
from PIL import Image

from service.imaging import ImageRefused, decode_pixels
from service.imaging.depth import at_depth, common_dtype
from service.ingest.errors import DatasetRejected, safe_name

logger = logging.getLogger(__name__)


def decode_image(data: bytes, *, name: str, max_pixels: int) -> np.ndarray:
    """Decode one image to uint8 ``(H, W)`` grey or ``(H, W, 3)`` colour, or uint16 ``(H, W)`` grey
    (``decode_pixels``); raises ``DatasetRejected`` 422 naming ``name``."""
    try:
        return decode_pixels(data, max_pixels=max_pixels)
    except ImageRefused as exc:
        raise DatasetRejected(422, f"image {safe_name(name)} is {exc}") from exc


def _resize(array: np.ndarray, *, height: int, width: int) -> np.ndarray:
    # Pillow resizes uint16 grey in its own 16-bit mode ("I;16"), as predict does.
    resized = Image.fromarray(array).resize((width, height), Image.Resampling.BILINEAR)
    return np.asarray(resized, dtype=array.dtype)


def stack_images(arrays: list[np.ndarray]) -> tuple[np.ndarray, list[str]]:
    """Stack decoded images into uint8 or uint16 ``(N, H, W, C)`` and say what was changed.

    Rules: if any image is colour, all become RGB (C=3), else grey (C=1). If
    sizes differ, every image is resized (bilinear) to the most common size
    (ties: the first met in archive order) and a note records it. If any
    image is 16-bit, all are stored as uint16, the 8-bit ones widened by 257
    (``service.imaging.depth``).
    """
    if not arrays:
        raise ValueError("stack_images needs at least one image")
    colour = any(array.ndim == 3 for array in arrays)
    (height, width), _ = Counter(array.shape[:2] for array in arrays).most_common(1)[0]
    dtype = common_dtype(array.dtype for array in arrays)
    out = np.empty((len(arrays), height, width, 3 if colour else 1), dtype=dtype)
    resized = greyed = 0
    for index, array in enumerate(arrays):
        if array.shape[:2] != (height, width):
            array = _resize(array, height=height, width=width)
            resized += 1
        if array.ndim == 2:
            greyed += colour
            array = array[..., None]
        out[index] = at_depth(array, dtype)  # broadcasts a grey (H, W, 1) image over 3 channels
    notes = []
    if resized:
        notes.append(f"resized {resized} of {len(arrays)} images to {height}x{width} (the most common size), bilinear")
    if greyed:
        notes.append(f"converted {greyed} greyscale images to RGB because other images are colour")
    widened = sum(array.dtype != dtype for array in arrays)
    if widened:
        notes.append(f"stored {widened} 8-bit images as 16 bits (x 257) because other images are 16-bit")
    return out, notes
