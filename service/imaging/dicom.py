"""DICOM (one frame per file) to uint8 or uint16 pixels with pydicom.

The normalisation, in DICOM's own order (PS3.3 C.11 and PS3.4 N.2):

1. the Modality LUT (Rescale Slope/Intercept or a Modality LUT Sequence)
   turns stored values into real-world ones (e.g. Hounsfield units);
2. the VOI transform (VOI LUT Sequence, else Window Center/Width with its
   VOI LUT Function) picks the range a reader would look at; its own output
   range (the transform of the lowest and highest possible values) maps to
   0..65535 (uint16) when the file stores more than 8 bits per pixel, else to
   0..255 (uint8). A file with neither maps its own min..max the same way;
3. MONOCHROME1 (low values bright) is inverted so that bright is high, as in
   MONOCHROME2 and every other image format.

Colour files (RGB, or YBR converted to RGB by pydicom) are scaled from their
bit depth to 8 bits (colour is 8-bit everywhere in rarefit). The pixel count
is checked against the limit before the pixel data is decoded, and a
multi-frame file is refused: a frame is not an image of its own without the
series' context.
"""

from __future__ import annotations

import io
import logging

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.pixels import apply_modality_lut, apply_voi_lut

from service.imaging.depth import PIXEL_DTYPES, full_scale
from service.imaging.refusal import ImageRefused, oversized, short

logger = logging.getLogger(__name__)

_PREAMBLE = 128
_MAGIC = b"DICM"
_GREY = ("MONOCHROME1", "MONOCHROME2")
_COLOUR = ("RGB", "YBR_FULL", "YBR_FULL_422", "YBR_ICT", "YBR_RCT")


def is_dicom(data: bytes) -> bool:
    """A DICOM Part 10 file: a 128-byte preamble, then ``DICM``."""
    return data[_PREAMBLE : _PREAMBLE + len(_MAGIC)] == _MAGIC


def decode_dicom(data: bytes, *, max_pixels: int) -> np.ndarray:
    """uint16 ``(H, W)`` grey (more than 8 bits stored), uint8 ``(H, W)`` grey or ``(H, W, 3)`` colour;
    raises :class:`ImageRefused`."""
    dataset = _read(data)
    photometric = _checked_header(dataset, max_pixels=max_pixels)
    try:
        pixels = dataset.pixel_array
        if photometric in _GREY:
            return _grey(pixels, dataset, inverted=photometric == "MONOCHROME1")
        return _colour(pixels, dataset)
    except ImageRefused:
        raise
    except Exception as exc:  # whatever a malformed pixel stream makes pydicom or its decoders raise
        raise ImageRefused(f"a truncated or corrupt DICOM ({short(exc)})") from exc


def _read(data: bytes) -> Dataset:
    try:
        return pydicom.dcmread(io.BytesIO(data))
    except Exception as exc:  # a malformed header can fail in many ways inside pydicom
        raise ImageRefused(f"a truncated or corrupt DICOM ({short(exc)})") from exc


def _checked_header(dataset: Dataset, *, max_pixels: int) -> str:
    """The photometric interpretation, after the checks that need no pixel decoded."""
    if "PixelData" not in dataset:
        raise ImageRefused("a DICOM without pixel data")
    rows, columns = int(dataset.get("Rows", 0) or 0), int(dataset.get("Columns", 0) or 0)
    if rows < 1 or columns < 1 or rows * columns > max_pixels:
        raise ImageRefused(oversized(width=columns, height=rows, max_pixels=max_pixels))
    frames = int(dataset.get("NumberOfFrames", 1) or 1)
    if frames != 1:
        raise ImageRefused(f"a multi-frame DICOM ({frames} frames); send one frame per file")
    photometric = str(dataset.get("PhotometricInterpretation", ""))
    if photometric not in _GREY + _COLOUR:
        supported = ", ".join(_GREY + _COLOUR)
        raise ImageRefused(f"a DICOM with photometric interpretation {photometric!r} (supported: {supported})")
    return photometric


def _grey(pixels: np.ndarray, dataset: Dataset, *, inverted: bool) -> np.ndarray:
    values = np.asarray(apply_modality_lut(pixels, dataset), dtype=np.float64)
    if _has_voi(dataset):
        windowed = np.asarray(apply_voi_lut(values, dataset), dtype=np.float64)
        low, high = _voi_output_range(values, dataset)
    else:
        windowed, low, high = values, float(values.min()), float(values.max())
    span = high - low
    unit = np.zeros_like(windowed) if span <= 0 else np.clip((windowed - low) / span, 0.0, 1.0)
    if inverted:
        unit = 1.0 - unit
    # The window's output is continuous: a file of more than 8 bits keeps 16 of them.
    dtype = PIXEL_DTYPES[1] if int(dataset.get("BitsStored", 8) or 8) > 8 else PIXEL_DTYPES[0]
    return np.rint(unit * float(full_scale(dtype))).astype(dtype)


def _has_voi(dataset: Dataset) -> bool:
    return "VOILUTSequence" in dataset or ("WindowCenter" in dataset and "WindowWidth" in dataset)


def _voi_output_range(values: np.ndarray, dataset: Dataset) -> tuple[float, float]:
    """What the VOI transform gives the lowest and highest possible inputs: its output range
    (pydicom's windowing clips to it; a LUT's first and last entries bound it)."""
    extent = max(1.0, float(np.abs(values).max()))
    probe = np.array([-(2.0**32) * extent, 2.0**32 * extent], dtype=np.float64)
    low, high = (float(v) for v in np.asarray(apply_voi_lut(probe, dataset), dtype=np.float64))
    return min(low, high), max(low, high)


def _colour(pixels: np.ndarray, dataset: Dataset) -> np.ndarray:
    if pixels.ndim != 3 or pixels.shape[-1] != 3:
        raise ImageRefused(f"a colour DICOM with pixel array shape {tuple(pixels.shape)}")
    bits = int(dataset.get("BitsStored", 8) or 8)
    scale = 255.0 / float(2**bits - 1)
    return np.clip(np.rint(pixels.astype(np.float64) * scale), 0, 255).astype(np.uint8)
