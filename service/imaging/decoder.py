"""Pillow formats and DICOM to uint8 ``(H, W)`` grey or ``(H, W, 3)`` colour pixels, or uint16
``(H, W)`` grey for 16-bit images (``service.imaging.depth``).

Pillow's decompression-bomb guard is a process-wide global
(``Image.MAX_IMAGE_PIXELS``); we leave it alone and check our own limit on the
header (``Image.open`` is lazy) before a pixel is decoded. Truncated files
stay errors (``ImageFile.LOAD_TRUNCATED_IMAGES`` is never set). EXIF
orientation is applied (``ImageOps.exif_transpose``), so a phone photo taken
upright is upright whichever way the sensor was held.
"""

from __future__ import annotations

import io
import struct

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from service.imaging.dicom import decode_dicom, is_dicom
from service.imaging.refusal import ImageRefused, oversized, short

PILLOW_FORMATS = ("PNG", "JPEG", "BMP", "TIFF", "GIF", "WEBP")
ACCEPTED_FORMATS = (*PILLOW_FORMATS, "DICOM")
_SIXTEEN_BIT = {"I", "I;16", "I;16L", "I;16B", "I;16N"}  # 16-bit greyscale (PNG, TIFF)
_GREY = {"1", "L", "LA", "La"}
# What a malformed file can make a Pillow decoder raise besides OSError.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, IndexError, TypeError)
_BOMB_ERRORS = (Image.DecompressionBombError, Image.DecompressionBombWarning)


def decode_pixels(data: bytes, *, max_pixels: int) -> np.ndarray:
    """Decode one image (GIF: first frame) to uint8 ``(H, W)`` grey or ``(H, W, 3)`` colour, or
    uint16 ``(H, W)`` for 16-bit grey (PNG, TIFF, DICOM stored in more than 8 bits).

    An image counts as colour when its RGB channels differ somewhere, so grey
    pictures saved as RGB stay grey. Alpha is dropped, palettes converted,
    16-bit grey kept at all 16 bits. Raises :class:`ImageRefused` with a
    short, client-safe reason.
    """
    if not data:
        raise ImageRefused(f"empty (0 bytes; accepted: {', '.join(ACCEPTED_FORMATS)})")
    if is_dicom(data):
        return decode_dicom(data, max_pixels=max_pixels)
    image = _open(data, max_pixels=max_pixels)
    try:
        image.load()
        upright = ImageOps.exif_transpose(image)
        return _to_array(upright)
    except _BOMB_ERRORS as exc:
        raise ImageRefused(f"a decompression bomb: {short(exc)}") from exc
    except _DECODE_ERRORS as exc:
        # Truncated or corrupt pixel data only shows up here, after the header parsed.
        raise ImageRefused(f"truncated or corrupt ({short(exc)})") from exc
    finally:
        image.close()


def _open(data: bytes, *, max_pixels: int) -> Image.Image:
    try:
        image = Image.open(io.BytesIO(data), formats=PILLOW_FORMATS)
    except _BOMB_ERRORS as exc:  # Pillow's own guard, far beyond any sane limit
        raise ImageRefused(f"a decompression bomb: {short(exc)}") from exc
    except (UnidentifiedImageError, *_DECODE_ERRORS) as exc:
        raise ImageRefused(f"not a readable image (accepted: {', '.join(ACCEPTED_FORMATS)})") from exc
    width, height = image.size
    if width * height > max_pixels or width < 1 or height < 1:
        image.close()
        raise ImageRefused(oversized(width=width, height=height, max_pixels=max_pixels))
    return image


def _to_array(image: Image.Image) -> np.ndarray:
    if image.mode in _SIXTEEN_BIT:
        # Mode "I" is 32-bit signed; a 16-bit file only holds 0..65535, anything else saturates.
        return np.clip(np.asarray(image), 0, 65535).astype(np.uint16)
    if image.mode == "F":
        return np.clip(np.rint(np.asarray(image, dtype=np.float64)), 0, 255).astype(np.uint8)
    if image.mode in _GREY:
        return np.asarray(image.convert("L"), dtype=np.uint8).copy()
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")  # a direct P -> RGB conversion with a transparent index warns
    rgb = np.asarray(image.convert("RGB"), dtype=np.uint8)
    if np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2]):
        return rgb[..., 0].copy()
    return rgb.copy()
