"""Image files the tests make (no binaries committed): DICOM with pydicom (one frame, 16-bit
allocated, 12 bits stored, the optional tags each normalisation step reads) and a TIFF bomb."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid


def dicom_bytes(
    pixels: np.ndarray,
    *,
    photometric: str = "MONOCHROME2",
    window: tuple[float, float] | None = None,
    rescale: tuple[float, float] | None = None,
    frames: int = 1,
    rows_columns: tuple[int, int] | None = None,
    bits_stored: int = 12,
) -> bytes:
    """A Part 10 file of ``pixels`` (uint16 ``(H, W)``, ``bits_stored`` of 16 allocated); ``window`` =
    (center, width), ``rescale`` = (slope, intercept); ``frames`` and ``rows_columns`` may lie about the pixels."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = SecondaryCaptureImageStorage, meta.MediaStorageSOPInstanceUID
    ds.Modality = "OT"
    ds.Rows, ds.Columns = rows_columns or pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, bits_stored, bits_stored - 1, 0
    if frames != 1:
        ds.NumberOfFrames = frames
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    if rescale is not None:
        ds.RescaleSlope, ds.RescaleIntercept = rescale
    ds.PixelData = np.ascontiguousarray(pixels, dtype="<u2").tobytes()
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def tiff_bomb(*, side: int = 100_000) -> bytes:
    """A tiny TIFF whose first IFD declares ``side`` x ``side`` pixels (ImageWidth/ImageLength)."""
    buffer = io.BytesIO()
    Image.new("L", (8, 8)).save(buffer, format="TIFF")
    data = bytearray(buffer.getvalue())
    offset = int.from_bytes(data[4:8], "little")
    for index in range(int.from_bytes(data[offset : offset + 2], "little")):
        entry = offset + 2 + 12 * index
        if int.from_bytes(data[entry : entry + 2], "little") in (256, 257):
            data[entry + 2 : entry + 4] = (4).to_bytes(2, "little")  # type LONG, count 1
            data[entry + 8 : entry + 12] = side.to_bytes(4, "little")
    return bytes(data)
