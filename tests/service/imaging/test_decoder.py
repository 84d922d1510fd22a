"""service.imaging: EXIF orientation, the DICOM normalisation (against hand-computed values) and
the refusals, for the decoder upload and predict share."""

from __future__ import annotations

import io

import numpy as np
import pytest
from image_files import dicom_bytes, tiff_bomb
from PIL import Image

from service.imaging import ImageRefused, decode_pixels

BIG = 10**8
RAMP = np.arange(16 * 16, dtype=np.uint16).reshape(16, 16) * 16  # 0 .. 4080, 12 bits


def test_exif_orientation_is_applied() -> None:
    array = np.zeros((4, 6), dtype=np.uint8)
    array[0, :] = 255  # a bright top row, 6 wide
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="JPEG", quality=100, exif=exif)
    upright = decode_pixels(buffer.getvalue(), max_pixels=BIG)
    assert upright.shape == (6, 4)  # width and height swapped
    assert upright[:, -1].min() > 200 and upright[:, 0].max() < 50  # the top row is now the right column


def test_dicom_without_a_window_maps_its_own_range_to_0_65535() -> None:
    decoded = decode_pixels(dicom_bytes(RAMP), max_pixels=BIG)  # 12 bits stored: kept at 16 bits
    expected = np.rint(RAMP.astype(np.float64) / 4080 * 65535).astype(np.uint16)
    assert decoded.dtype == np.uint16 and np.array_equal(decoded, expected)


def test_dicom_window_clips_and_stretches_after_the_rescale() -> None:
    # Real-world values 2 * stored - 1024; window [center 0, width 2001] -> -1000 .. 1000 (LINEAR).
    decoded = decode_pixels(dicom_bytes(RAMP, rescale=(2, -1024), window=(0.5, 2001)), max_pixels=BIG)
    values = RAMP.astype(np.float64) * 2 - 1024
    expected = np.rint(np.clip((values + 1000) / 2000, 0, 1) * 65535).astype(np.uint16)
    assert decoded.dtype == np.uint16 and np.abs(decoded.astype(int) - expected.astype(int)).max() <= 1
    assert decoded.min() == 0 and decoded.max() == 65535


def test_dicom_of_at_most_8_bits_stays_uint8() -> None:
    decoded = decode_pixels(dicom_bytes(RAMP // 16, bits_stored=8), max_pixels=BIG)  # 0 .. 255
    assert decoded.dtype == np.uint8 and np.array_equal(decoded, (RAMP // 16).astype(np.uint8))


def test_monochrome1_is_inverted() -> None:
    plain = decode_pixels(dicom_bytes(RAMP), max_pixels=BIG)
    inverted = decode_pixels(dicom_bytes(RAMP, photometric="MONOCHROME1"), max_pixels=BIG)
    assert np.array_equal(inverted, 65535 - plain)


@pytest.mark.parametrize("fmt", ["PNG", "TIFF"])
def test_sixteen_bit_files_keep_their_low_byte(fmt: str) -> None:
    base = np.arange(12, dtype=np.uint16).reshape(3, 4) * 4099 + 256  # every value on a distinct 8-bit level
    decoded = []
    for low in (0, 97):  # the same high bytes; only the low 8 bits differ
        buffer = io.BytesIO()
        Image.fromarray(base + low).save(buffer, format=fmt)
        decoded.append(decode_pixels(buffer.getvalue(), max_pixels=BIG))
    assert all(d.dtype == np.uint16 for d in decoded)
    assert np.array_equal(decoded[0], base) and np.array_equal(decoded[1], base + 97)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (dicom_bytes(RAMP, frames=3), "a multi-frame DICOM (3 frames); send one frame per file"),
        (dicom_bytes(RAMP, rows_columns=(60000, 60000)), "60000x60000 = 3600000000 pixels, over the limit"),
        (dicom_bytes(RAMP)[:-100], "a truncated or corrupt DICOM"),
        (dicom_bytes(RAMP, photometric="PALETTE COLOR"), "a DICOM with photometric interpretation 'PALETTE COLOR'"),
    ],
    ids=["multi-frame", "huge-declared-frame", "truncated", "palette"],
)
def test_unusable_dicom_is_refused_with_its_reason(data: bytes, reason: str) -> None:
    with pytest.raises(ImageRefused, match="^" + reason.replace("(", r"\(").replace(")", r"\)")):
        decode_pixels(data, max_pixels=BIG)


def test_tiff_bomb_is_refused_from_its_header() -> None:
    with pytest.raises(ImageRefused, match="^a decompression bomb"):  # Pillow's own guard, at open
        decode_pixels(tiff_bomb(side=100_000), max_pixels=BIG)
    with pytest.raises(ImageRefused, match="^3000x3000 = 9000000 pixels, over the limit of 1000000 pixels"):
        decode_pixels(tiff_bomb(side=3_000), max_pixels=1_000_000)  # ours, from the header
