"""Image bytes -> the float tensor a model artefact takes: ``(C, H, W)`` in ``[0, 1]``.

Decoding is ``service.imaging.decode_pixels``, the very function dataset upload
uses (formats, pixel limit, EXIF orientation, 16-bit and DICOM normalisation),
then the image is converted to the model's channels, resized bilinearly and
divided by its own depth's ``2**bits - 1`` (``service.imaging.depth``), so a
served image reaches the model as the same values a training image did: a
16-bit image keeps all 16 bits, and an 8-bit one sent to a model trained on
16-bit data is ``v / 255 == 257 v / 65535``, what training saw of it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

from service.imaging import ACCEPTED_FORMATS, ImageRefused, decode_pixels
from service.imaging.depth import full_scale

logger = logging.getLogger(__name__)

ALLOWED_FORMATS = ACCEPTED_FORMATS


class InstanceError(ValueError):
    """One instance of a predict request could not be used; names it for the 422 answer."""

    def __init__(self, index: int, reason: str, *, name: str | None = None) -> None:
        self.index, self.reason, self.name = index, reason, name
        where = f"instance {index}" + (f" (file {name!r})" if name else "")
        super().__init__(f"{where}: {reason}")


def decode_image(data: bytes, *, height: int, width: int, channels: int, max_pixels: int) -> torch.Tensor:
    """Decode ``data`` to float32 ``(channels, height, width)`` in ``[0, 1]``.

    Converts to greyscale (``channels=1``) or RGB (``channels=3``) and resizes
    bilinearly when the size differs. Raises ``ImageRefused`` (a
    ``ValueError``) with a short, client-safe reason.
    """
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels!r}")
    pixels = decode_pixels(data, max_pixels=max_pixels)
    image = Image.fromarray(pixels)
    if pixels.dtype == np.uint8:
        image = image.convert("L" if channels == 1 else "RGB")
    # else 16-bit grey ("I;16"): Pillow resizes it at 16 bits; a colour model gets it on every channel.
    if image.size != (width, height):
        image = image.resize((width, height), Image.Resampling.BILINEAR)
    array = np.asarray(image, dtype=np.float32) / np.float32(full_scale(pixels.dtype))
    array = array[:, :, None] if array.ndim == 2 else array
    if array.shape[2] != channels:
        array = np.repeat(array, channels, axis=2)
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
        except ImageRefused as exc:
            raise InstanceError(index, str(exc), name=name) from exc
    return torch.stack(tensors)
