"""Decoding untrusted image bytes with Pillow, and stacking them into one array.

Pillow's decompression-bomb guard is a process-wide global
(``Image.MAX_IMAGE_PIXELS``); we leave it alone and check our own limit on the
header (``Image.open`` is lazy) before ``load()`` decodes a pixel. Truncated
files stay errors (``ImageFile.LOAD_TRUNCATED_IMAGES`` is never set).
"""

from __future__ import annotations

import io
import logging
import struct
from collections import Counter

import numpy as np
from PIL import Image

from service.ingest.errors import DatasetRejected, safe_name

logger = logging.getLogger(__name__)

ALLOWED_FORMATS = ("PNG", "JPEG", "BMP", "TIFF", "GIF", "WEBP")
_SIXTEEN_BIT = {"I", "I;16", "I;16L", "I;16B", "I;16N"}
_GREY = {"1", "L", "LA", "La"}
# What a malformed file can make a Pillow decoder raise besides OSError.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, IndexError, TypeError)


def _open_checked(data: bytes, *, name: str, max_pixels: int) -> Image.Image:
    try:
        image = Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DatasetRejected(422, f"image {safe_name(name)} is a decompression bomb: {exc}") from exc
    except _DECODE_ERRORS as exc:
        raise DatasetRejected(
            422, f"file {safe_name(name)} is not a readable image (accepted: {', '.join(ALLOWED_FORMATS)})"
        ) from exc
    width, height = image.size
    if width * height > max_pixels:
        raise DatasetRejected(
            422,
            f"image {safe_name(name)} is {width}x{height} = {width * height} pixels, over the limit of "
            f"{max_pixels} pixels (a decompression bomb or an oversized image)",
        )
    return image


def decode_image(data: bytes, *, name: str, max_pixels: int) -> np.ndarray:
    """Decode one image (GIF: first frame) to uint8 ``(H, W)`` grey or ``(H, W, 3)`` colour.

    An image counts as colour when its RGB channels differ somewhere, so
    grey pictures saved as RGB stay grey. Alpha is dropped, palettes and
    16-bit images are converted. Raises ``DatasetRejected`` 422 naming ``name``.
    """
    image = _open_checked(data, name=name, max_pixels=max_pixels)
    try:
        image.load()
        return _to_array(image)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DatasetRejected(422, f"image {safe_name(name)} is a decompression bomb: {exc}") from exc
    except _DECODE_ERRORS as exc:
        raise DatasetRejected(422, f"image {safe_name(name)} is truncated or corrupt ({exc})") from exc
    finally:
        image.close()


def _to_array(image: Image.Image) -> np.ndarray:
    if image.mode in _SIXTEEN_BIT:
        # 16-bit grey spans 0..65535; scale instead of clipping at 255.
        wide = np.asarray(image, dtype=np.float64)
        return np.clip(np.rint(wide / 257.0), 0, 255).astype(np.uint8)
    if image.mode == "F":
        return np.clip(np.rint(np.asarray(image, dtype=np.float64)), 0, 255).astype(np.uint8)
    if image.mode in _GREY:
        return np.asarray(image.convert("L"), dtype=np.uint8).copy()
    rgb = np.asarray(image.convert("RGB"), dtype=np.uint8)
    if np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2]):
        return rgb[..., 0].copy()
    return rgb.copy()


def _resize(array: np.ndarray, *, height: int, width: int) -> np.ndarray:
    resized = Image.fromarray(array).resize((width, height), Image.Resampling.BILINEAR)
    return np.asarray(resized, dtype=np.uint8)


def stack_images(arrays: list[np.ndarray]) -> tuple[np.ndarray, list[str]]:
    """Stack decoded images into uint8 ``(N, H, W, C)`` and say what was changed.

    Rules: if any image is colour, all become RGB (C=3), else grey (C=1). If
    sizes differ, every image is resized (bilinear) to the most common size
    (ties: the first met in archive order) and a note records it.
    """
    if not arrays:
        raise ValueError("stack_images needs at least one image")
    colour = any(array.ndim == 3 for array in arrays)
    (height, width), _ = Counter(array.shape[:2] for array in arrays).most_common(1)[0]
    out = np.empty((len(arrays), height, width, 3 if colour else 1), dtype=np.uint8)
    resized = greyed = 0
    for index, array in enumerate(arrays):
        if array.shape[:2] != (height, width):
            array = _resize(array, height=height, width=width)
            resized += 1
        if array.ndim == 2:
            greyed += colour
            array = array[..., None]
        out[index] = array  # broadcasts a grey (H, W, 1) image over 3 channels
    notes = []
    if resized:
        notes.append(f"resized {resized} of {len(arrays)} images to {height}x{width} (the most common size), bilinear")
    if greyed:
        notes.append(f"converted {greyed} greyscale images to RGB because other images are colour")
    return out, notes
