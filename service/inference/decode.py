"""Image bytes -> the float tensor a model artefact takes: ``(C, H, W)`` in ``[0, 1]``.

Untrusted input: the pixel count is read from the header and checked before
any pixel is decoded (decompression bombs), and only a short list of formats
is parsed at all.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

logger = logging.getLogger(__name__)

ALLOWED_FORMATS = ("PNG", "JPEG", "BMP", "TIFF", "GIF", "WEBP")
_WIDE_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")  # 16-bit greyscale (PNG, TIFF)


class InstanceError(ValueError):
    """One instance of a predict request could not be used; names it for the 422 answer."""

    def __init__(self, index: int, reason: str, *, name: str | None = None) -> None:
        self.index, self.reason, self.name = index, reason, name
        where = f"instance {index}" + (f" (file {name!r})" if name else "")
        super().__init__(f"{where}: {reason}")


def decode_image(
    data: bytes, *, height: int, width: int, channels: int, max_pixels: int
) -> torch.Tensor:
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
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
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
            tensors.append(
                decode_image(data, height=height, width=width, channels=channels, max_pixels=max_pixels)
            )
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
    except (OSError, ValueError, SyntaxError) as exc:
        raise ValueError(f"cannot read image header: {_short(exc)}") from exc
    pixels = image.width * image.height
    if pixels > max_pixels or image.width < 1 or image.height < 1:
        image.close()
        raise ValueError(
            f"image is {image.width}x{image.height} = {pixels} pixels; the limit is {max_pixels}"
        )
    return image


def _pixels(image: Image.Image, *, channels: int, size: tuple[int, int]) -> np.ndarray:
    """``(H, W, C)`` float32 in [0, 1]; 16-bit greyscale keeps its range instead of clipping."""
    if image.mode in _WIDE_MODES:
        image = image.convert("F")  # resize in float, then scale 0..65535 -> 0..1
        scale = 65535.0
    else:
        if image.mode == "P" and "transparency" in image.info:
            # Via RGBA: a direct P -> RGB conversion with a transparent index warns.
            image = image.convert("RGBA")
        image = image.convert("L" if channels == 1 else "RGB")
        scale = 255.0
    if image.size != size:
        image = image.resize(size, Image.Resampling.BILINEAR)
    array = np.asarray(image, dtype=np.float32) / np.float32(scale)
    np.clip(array, 0.0, 1.0, out=array)
    if array.ndim == 2:
        array = array[:, :, None]
    if array.shape[2] != channels:  # 16-bit greyscale fed to an RGB model
        array = np.repeat(array, channels, axis=2)
    return array


def _short(exc: BaseException) -> str:
    # Pillow messages are short and path-free (we decode from memory); cap them anyway.
    text = str(exc) or type(exc).__name__
    return text[:200]
