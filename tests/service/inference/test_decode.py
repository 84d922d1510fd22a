"""decode_image / decode_batch: exact pixels, conversions, resizing, refusals that name the instance."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
import torch
from image_files import dicom_bytes
from PIL import Image

from service.imaging.decoder import PILLOW_FORMATS
from service.inference import InstanceError, decode_batch, decode_image

BIG = 10**9


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def grey(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(height, width), dtype=np.uint8)


def test_native_size_png_decodes_to_exact_pixels_over_255() -> None:
    array = grey(12, 10)
    tensor = decode_image(encode(Image.fromarray(array), "PNG"), height=12, width=10, channels=1, max_pixels=BIG)
    assert tensor.dtype == torch.float32 and tuple(tensor.shape) == (1, 12, 10)
    assert torch.equal(tensor[0], torch.from_numpy(array).float() / 255)


def test_rgb_keeps_channel_order() -> None:
    array = np.random.default_rng(1).integers(0, 256, size=(5, 7, 3), dtype=np.uint8)
    tensor = decode_image(encode(Image.fromarray(array), "PNG"), height=5, width=7, channels=3, max_pixels=BIG)
    assert torch.equal(tensor, torch.from_numpy(array).permute(2, 0, 1).float() / 255)


def test_colour_to_grey_and_grey_to_colour_follow_pillow() -> None:
    rgb = Image.fromarray(np.random.default_rng(2).integers(0, 256, size=(6, 6, 3), dtype=np.uint8))
    as_grey = decode_image(encode(rgb, "PNG"), height=6, width=6, channels=1, max_pixels=BIG)
    assert torch.equal(as_grey[0], torch.from_numpy(np.array(rgb.convert("L"))).float() / 255)
    array = grey(6, 6)
    as_rgb = decode_image(encode(Image.fromarray(array), "PNG"), height=6, width=6, channels=3, max_pixels=BIG)
    assert all(torch.equal(as_rgb[c], torch.from_numpy(array).float() / 255) for c in range(3))


def test_other_sizes_are_resized_bilinearly_to_the_model_input() -> None:
    image = Image.fromarray(grey(32, 20))
    tensor = decode_image(encode(image, "PNG"), height=12, width=10, channels=1, max_pixels=BIG)
    expected = np.asarray(image.resize((10, 12), Image.Resampling.BILINEAR), dtype=np.float32) / 255
    assert tuple(tensor.shape) == (1, 12, 10)
    assert torch.allclose(tensor[0], torch.from_numpy(expected), atol=1 / 255 + 1e-6)


def test_sixteen_bit_grey_keeps_all_sixteen_bits() -> None:
    array = np.array([[0, 32768], [65535, 1000], [1001, 1002]], dtype=np.uint16)  # 1000..1002: one 8-bit level
    data = encode(Image.fromarray(array), "PNG")
    tensor = decode_image(data, height=3, width=2, channels=1, max_pixels=BIG)
    assert torch.equal(tensor[0], torch.from_numpy(array.astype(np.float32) / np.float32(65535)))
    as_rgb = decode_image(data, height=3, width=2, channels=3, max_pixels=BIG)
    assert all(torch.equal(as_rgb[c], tensor[0]) for c in range(3))


def test_sixteen_bit_grey_is_resized_at_sixteen_bits() -> None:
    array = np.random.default_rng(4).integers(0, 65536, size=(20, 16), dtype=np.uint16)
    image = Image.fromarray(array)
    tensor = decode_image(encode(image, "PNG"), height=10, width=8, channels=1, max_pixels=BIG)
    expected = np.asarray(image.resize((8, 10), Image.Resampling.BILINEAR), dtype=np.float32) / np.float32(65535)
    assert torch.equal(tensor[0], torch.from_numpy(expected))
    assert len(np.unique(np.asarray(tensor[0]) * 65535 % 257)) > 1  # not 8-bit levels


@pytest.mark.parametrize(
    ("image", "channels"),
    [
        (Image.fromarray(np.random.default_rng(7).integers(0, 65536, (6, 5), dtype=np.uint16)), 1),
        (Image.fromarray(np.random.default_rng(8).integers(0, 256, (6, 5, 3), dtype=np.uint8)), 3),
        (Image.fromarray(np.random.default_rng(9).integers(0, 256, (6, 5), dtype=np.uint8)).convert("P"), 1),
        (Image.fromarray(np.random.default_rng(10).integers(0, 256, (6, 5, 4), dtype=np.uint8)), 3),
    ],
    ids=["16-bit", "rgb", "palette", "rgba"],
)
def test_served_pixels_equal_the_pixels_ingest_stores_for_training(image: Image.Image, channels: int) -> None:
    from service.ingest.images import decode_image as ingest_decode

    data = encode(image, "PNG")
    stored = ingest_decode(data, name="x.png", max_pixels=BIG)  # uint8 (H, W) or (H, W, 3); uint16 (H, W)
    served = decode_image(data, height=6, width=5, channels=channels, max_pixels=BIG)
    stored = stored[:, :, None] if stored.ndim == 2 else stored
    full_scale = float(np.iinfo(stored.dtype).max)
    assert torch.equal(served, torch.from_numpy(stored.copy()).permute(2, 0, 1).float() / full_scale)


@pytest.mark.parametrize("fmt", PILLOW_FORMATS)
def test_every_allowed_format_decodes(fmt: str) -> None:
    image = Image.fromarray(np.random.default_rng(3).integers(0, 256, size=(9, 9, 3), dtype=np.uint8))
    tensor = decode_image(encode(image, fmt), height=9, width=9, channels=3, max_pixels=BIG)
    assert tuple(tensor.shape) == (3, 9, 9)
    assert float(tensor.min()) >= 0.0 and float(tensor.max()) <= 1.0


def test_palette_gif_with_transparency_decodes() -> None:
    image = Image.fromarray(grey(4, 4)).convert("P")
    data = encode(image, "GIF", transparency=0)
    assert tuple(decode_image(data, height=4, width=4, channels=3, max_pixels=BIG).shape) == (3, 4, 4)


def test_a_format_pillow_reads_but_we_do_not_accept_is_refused() -> None:
    data = encode(Image.fromarray(grey(4, 4)), "PPM")
    Image.open(io.BytesIO(data)).load()  # Pillow itself would read it
    with pytest.raises(ValueError, match="not a readable image"):
        decode_image(data, height=4, width=4, channels=1, max_pixels=BIG)


@pytest.mark.parametrize("data", [b"", b"not an image at all", b"\x89PNG\r\n\x1a\n"])
def test_garbage_is_refused(data: bytes) -> None:
    with pytest.raises(ValueError):
        decode_image(data, height=4, width=4, channels=1, max_pixels=BIG)


def test_truncated_pixel_data_is_refused() -> None:
    data = encode(Image.fromarray(grey(64, 64)), "PNG")
    with pytest.raises(ValueError, match="truncated or corrupt"):
        decode_image(data[: len(data) // 2], height=64, width=64, channels=1, max_pixels=BIG)


def png_header_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose IHDR claims ``width x height`` (valid CRC; the pixels are absent)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")


def test_pixel_limit_is_checked_from_the_header_before_decoding() -> None:
    data = png_header_claiming(5000, 4000)  # 20 MP claimed in ~60 bytes
    with pytest.raises(ValueError, match=r"5000x4000 = 20000000 pixels, over the limit of 1000000 pixels"):
        decode_image(data, height=8, width=8, channels=1, max_pixels=1_000_000)


def test_decompression_bomb_far_beyond_pillows_own_limit_is_refused() -> None:
    data = png_header_claiming(60000, 60000)
    with pytest.raises(ValueError, match="too large|pixels"):
        decode_image(data, height=8, width=8, channels=1, max_pixels=16_000_000)


def test_batch_stacks_in_order() -> None:
    arrays = [grey(3, 4, seed) for seed in range(3)]
    batch = decode_batch(
        [encode(Image.fromarray(a), "PNG") for a in arrays],
        names=[None] * 3,
        height=3,
        width=4,
        channels=1,
        max_pixels=BIG,
    )
    assert tuple(batch.shape) == (3, 1, 3, 4)
    for index, array in enumerate(arrays):
        assert torch.equal(batch[index, 0], torch.from_numpy(array).float() / 255)


def test_batch_error_names_the_instance_and_file() -> None:
    good = encode(Image.fromarray(grey(3, 4)), "PNG")
    with pytest.raises(InstanceError) as caught:
        decode_batch(
            [good, good, b"junk"], names=["a.png", "b.png", "x.png"], height=3, width=4, channels=1, max_pixels=BIG
        )
    assert caught.value.index == 2
    assert str(caught.value).startswith("instance 2 (file 'x.png'): not a readable image")


def test_batch_error_without_names() -> None:
    with pytest.raises(InstanceError, match=r"^instance 0: empty \(0 bytes; accepted: PNG, .*DICOM\)$"):
        decode_batch([b""], names=[None], height=3, width=4, channels=1, max_pixels=BIG)


def test_rejects_unsupported_channel_count() -> None:
    with pytest.raises(ValueError, match="channels must be 1 or 3, got 4"):
        decode_image(b"x", height=1, width=1, channels=4, max_pixels=BIG)


def test_dicom_is_served_through_the_same_normalisation_as_upload() -> None:
    from service.ingest.images import decode_image as ingest_decode

    stored = np.arange(6 * 5, dtype=np.uint16).reshape(6, 5) * 100
    data = dicom_bytes(stored, photometric="MONOCHROME1", window=(1500, 2000))
    served = decode_image(data, height=6, width=5, channels=1, max_pixels=BIG)
    expected = ingest_decode(data, name="x.dcm", max_pixels=BIG)
    assert expected.dtype == np.uint16  # 12 bits stored
    assert torch.equal(served[0], torch.from_numpy(expected).float() / 65535)


def test_a_multi_frame_dicom_names_its_instance() -> None:
    data = dicom_bytes(np.zeros((4, 4), dtype=np.uint16), frames=2)
    with pytest.raises(InstanceError, match=r"^instance 0 \(file 'ct.dcm'\): a multi-frame DICOM \(2 frames\)"):
        decode_batch([data], names=["ct.dcm"], height=4, width=4, channels=1, max_pixels=BIG)
