"""Pixel depth: 8-bit (uint8) and 16-bit (uint16) images, and the one normalisation they share.

A model sees ``x / (2**bits - 1)``: ``x / 255`` for 8-bit pixels, ``x / 65535``
for 16-bit ones. A dataset with any 16-bit image is stored as uint16 with its
8-bit images widened by 257 (``255 * 257 == 65535``), so every image of it is
normalised the same way and an 8-bit value ``v`` reaches the model as exactly
``v / 255`` either way.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

PIXEL_DTYPES = (np.dtype(np.uint8), np.dtype(np.uint16))
WIDEN_8_TO_16 = 257


def pixel_bits(dtype: np.dtype) -> int:
    """8 for uint8 pixels, 16 for uint16; ``ValueError`` for any other dtype."""
    dtype = np.dtype(dtype)
    if dtype not in PIXEL_DTYPES:
        raise ValueError(f"pixels must be uint8 or uint16, got {dtype}")
    return dtype.itemsize * 8


def full_scale(dtype: np.dtype) -> int:
    """``2**bits - 1``: what a pixel of ``dtype`` is divided by to reach ``[0, 1]``."""
    return (1 << pixel_bits(dtype)) - 1


def common_dtype(dtypes: Iterable[np.dtype]) -> np.dtype:
    """uint16 when any of ``dtypes`` is, else uint8."""
    return PIXEL_DTYPES[1] if any(np.dtype(d) == PIXEL_DTYPES[1] for d in dtypes) else PIXEL_DTYPES[0]


def at_depth(array: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """``array`` as ``dtype`` pixels: returned as is when it already is, an 8-bit one widened by 257."""
    dtype = np.dtype(dtype)
    if array.dtype == dtype:
        return array
    if array.dtype == PIXEL_DTYPES[0] and dtype == PIXEL_DTYPES[1]:
        return array.astype(np.uint16) * np.uint16(WIDEN_8_TO_16)
    raise ValueError(f"cannot store {array.dtype} pixels as {dtype} (only uint8 widens, to uint16)")
