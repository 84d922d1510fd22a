"""Image bytes -> the float tensor a model artefact takes: ``(C, H, W)`` in ``[0, 1]``.

Untrusted input: the pixel count is read from the header and checked before
any pixel is decoded (decompression bombs), and only a short list of formats
is parsed at all. Pixels go through uint8 exactly as upload ingest does
(``service.ingest.images``: 16-bit grey scaled by 257, bilinear resize of the
8-bit image), so a served image reaches the model as the same values a
training image did.
"""

from __future__ import annotations

import io
import logging
import struct
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

logger = logging.getLogger(__name__)

ALLOWED_FORMATS = ("PNG", "JPEG", "BMP", "TIFF", "GIF", "WEBP")
_SIXTEEN_BIT = ("I", "I;16", "I;16L", "I;16B", "I;16N")  # 16-bit greyscale (PNG, TIFF)
# What a malformed file can make a Pillow decoder raise besides OSError.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, IndexError, TypeError)


class InstanceError(ValueError):
    """One instance of a predict request could not be used; names it for the 422 answer."""

    def __init__(self, index: int, reason: str, *, name: str | None = None) -> None:
        self.index, self.reason, self.name = index, reason, name
        where = f"instance {index}" + (f" (file {name!r})" if name else "")
        super().__init__(f"{where}: {reason}")


def decode_image(data: bytes, *, height: int, width: int, channels: int, max_pixels: int) -> torch.Tensor:
    """Decode ``data`` to float32 ``(channels, height, width)`` in ``[0, 1]``.

    Converts to greyscale (``channels=1``) or RGB (``channels=3``) and resizes
    bilinearly when the size differs. Raises ``ValueError`` with a short,
    client-safe reason for anything it cannot or will not decode.
    """
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels!r}")
    if not data:
        raise ValueError("empty file")
    image = _open(data, max_pixels=max_pixels)
    try:
        array = _pixels(image, channels=channels, size=(width, height))
    except (*_DECODE_ERRORS, Image.DecompressionBombError) as exc:
        # Truncated or corrupt pixel data only shows up here, after the header parsed.
        raise ValueError(f"cannot decode {image.format} image: {_short(exc)}") from exc
    finally:
        image.close()
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


def decode_batch(
    images: Sequence[bytes],
    *,
    names: Sequence[str | None],
    height: int,
    width: int,
    channels: int,
    max_pixels: int,
    first_index: int = 0,
) -> torch.Tensor:
    """Decode every image into one ``(N, C, H, W)`` batch; the first failure raises
    ``InstanceError`` naming its index (0-based, counted from ``first_index``) and file name."""
    tensors = []
    for index, (data, name) in enumerate(zip(images, names, strict=True), start=first_index):
        try:
            tensors.append(decode_image(data, height=height, width=width, channels=channels, max_pixels=max_pixels))
        except ValueError as exc:
            raise InstanceError(index, str(exc), name=name) from exc
    return torch.stack(tensors)


def _open(data: bytes, *, max_pixels: int) -> Image.Image:
    try:
        image = Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
    except UnidentifiedImageError as exc:
        raise ValueError(f"cannot identify image (accepted formats: {', '.join(ALLOWED_FORMATS)})") from exc
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # Pillow's own guard fired while reading the header (far beyond any sane limit).
        raise ValueError(f"image too large (limit {max_pixels} pixels)") from exc
    except _DECODE_ERRORS as exc:
        raise ValueError(f"cannot read image header: {_short(exc)}") from exc
    pixels = image.width * image.height
    if pixels > max_pixels or image.width < 1 or image.height < 1:
        image.close()
        raise ValueError(f"image is {image.width}x{image.height} = {pixels} pixels; the limit is {max_pixels}")
    return image


def _pixels(image: Image.Image, *, channels: int, size: tuple[int, int]) -> np.ndarray:
    """``(H, W, C)`` float32 in [0, 1], via the same 8-bit image ingest would have stored."""
    image = _eight_bit(image)
    image = image.convert("L" if channels == 1 else "RGB")
    if image.size != size:
        image = image.resize(size, Image.Resampling.BILINEAR)
    array = np.asarray(image, dtype=np.float32) / np.float32(255)
    return array[:, :, None] if array.ndim == 2 else array


def _eight_bit(image: Image.Image) -> Image.Image:
    if image.mode in _SIXTEEN_BIT:  # 0..65535 -> 0..255, rounded (clipping would saturate)
        wide = np.asarray(image, dtype=np.float64)
        return Image.fromarray(np.clip(np.rint(wide / 257.0), 0, 255).astype(np.uint8))
    if image.mode == "F":
        return Image.fromarray(np.clip(np.rint(np.asarray(image, dtype=np.float64)), 0, 255).astype(np.uint8))
    if image.mode == "P" and "transparency" in image.info:
        # Via RGBA: a direct P -> RGB/L conversion with a transparent index warns.
        return image.convert("RGBA")
    return image


def _short(exc: BaseException) -> str:
    # Pillow messages are short and path-free (we decode from memory); cap them anyway.
    text = str(exc) or type(exc).__name__
    return text[:200]
