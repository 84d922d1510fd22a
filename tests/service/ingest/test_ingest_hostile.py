"""The hostile corpus: each upload is refused with the right status, a detail naming the
problem (never a server path), and nothing left in the blob store."""

from __future__ import annotations

import gzip
import io
import os
import tarfile
import zipfile
from pathlib import Path

import hostile
import numpy as np
import pytest
from ingest_support import rejected
from PIL import Image
from wellformed import folder_entries, png_bytes, write_tar, write_zip

from service.ingest import IngestLimits
from service.storage import LocalBlobStore


def _refused(path: Path, store: LocalBlobStore, limits: IngestLimits, status: int, *fragments: str, **kw) -> str:
    error = rejected(path, store=store, limits=limits, **kw)
    assert error.status_code == status, error.detail
    for fragment in fragments:
        assert fragment in error.detail, error.detail
    assert str(store.root.parent) not in error.detail and "/tmp" not in error.detail
    assert error.detail.isprintable()
    return error.detail


# --- paths, links, devices ------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "fragment"),
    [
        ("../evil.png", "'../evil.png' contains '..' (path traversal)"),
        ("train/cat/../../../evil.png", "contains '..'"),
        ("..\\..\\evil.png", "contains '..'"),
        ("/etc/x", "'/etc/x' has an absolute path"),
        ("C:/Windows/x.png", "has an absolute path"),
    ],
)
def test_zip_slip(files, store, limits, name: str, fragment: str) -> None:
    _refused(hostile.zip_with(files / "slip.zip", name), store, limits, 422, fragment)


def test_zip_symlink_entry(files, store, limits) -> None:
    _refused(hostile.zip_symlink(files / "l.zip"), store, limits, 422, "'train/cat/link.png' is a symbolic link")


def test_zip_device_entry(files, store, limits) -> None:
    _refused(hostile.zip_device(files / "d.zip"), store, limits, 422, "'train/cat/tty.png' is a device")


def test_zip_encrypted_entry(files, store, limits) -> None:
    path = write_zip(files / "e.zip", folder_entries(hostile.GOOD), compression=zipfile.ZIP_STORED)
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as archive:
        info = archive.infolist()[0]
    record = data.rfind(info.filename.encode()) - 46
    data[record + 8] |= 0x1  # general purpose flag bit 0: encrypted
    data[info.header_offset + 6] |= 0x1
    path.write_bytes(bytes(data))
    _refused(path, store, limits, 422, "is encrypted")


@pytest.mark.parametrize(
    ("kind", "fragment"),
    [
        (tarfile.SYMTYPE, "is a link"),
        (tarfile.LNKTYPE, "is a link"),
        (tarfile.FIFOTYPE, "is a device or fifo"),
        (tarfile.CHRTYPE, "is a device or fifo"),
    ],
)
def test_tar_links_and_devices(files, store, limits, kind: bytes, fragment: str) -> None:
    info = tarfile.TarInfo("train/cat/special.png")
    info.type = kind
    info.linkname = "/etc/passwd"
    _refused(hostile.tar_with(files / "t.tar.gz", info), store, limits, 422, "'train/cat/special.png' " + fragment)


@pytest.mark.parametrize("name", ["../evil.png", "/etc/x"])
def test_tar_slip(files, store, limits, name: str) -> None:
    info = tarfile.TarInfo(name)
    info.size = 3
    _refused(hostile.tar_with(files / "t.tgz", info, b"abc"), store, limits, 422, repr(name))


# --- bombs and lying headers --------------------------------------------------------


def test_zip_bomb_past_the_expanded_limit(files, store) -> None:
    small = IngestLimits(max_archive_entries=100, max_expanded_bytes=1024 * 1024, max_image_pixels=10**6)
    path = hostile.zip_bomb(files / "bomb.zip", expanded=4 * 1024 * 1024)
    assert path.stat().st_size < 64 * 1024
    _refused(path, store, small, 413, "expands to more than the limit of 1048576 bytes (1.0 MiB)", "bomb.png")


def test_zip_bomb_by_compression_ratio(files, store, limits) -> None:
    path = hostile.zip_bomb(files / "ratio.zip", expanded=20 * 1024 * 1024)  # under the 64 MiB cap
    _refused(path, store, limits, 422, "'train/cat/bomb.png' expands", "zip bomb")


def test_zip_entry_lying_about_its_size(files, store, limits) -> None:
    # The headers say 100 bytes, the data inflates to 1 MiB: zipfile stops at the
    # declared size and the CRC no longer matches, so the read fails, never grows.
    path = hostile.zip_lying_size(files / "liar.zip", declared=100)
    _refused(path, store, limits, 422, "could not be read", "liar.png")


def test_too_many_entries(files, store) -> None:
    few = IngestLimits(max_archive_entries=10, max_expanded_bytes=10**8, max_image_pixels=10**6)
    _refused(hostile.zip_many_entries(files / "many.zip", count=50), store, few, 413, "more than 10 entries")


def test_too_many_tar_entries(files, store) -> None:
    few = IngestLimits(max_archive_entries=10, max_expanded_bytes=10**8, max_image_pixels=10**6)
    path = write_tar(files / "many.tar.gz", folder_entries({"cat": 6, "dog": 6}))
    _refused(path, store, few, 413, "more than 10 entries")


def test_tar_gz_bomb_member(files, store) -> None:
    small = IngestLimits(max_archive_entries=100, max_expanded_bytes=1024 * 1024, max_image_pixels=10**6)
    info = tarfile.TarInfo("train/cat/bomb.png")
    info.size = 4 * 1024 * 1024
    path = hostile.tar_with(files / "bomb.tar.gz", info, bytes(info.size))
    assert path.stat().st_size < 64 * 1024
    _refused(path, store, small, 413, "expands to more than the limit of 1048576 bytes", "bomb.png")


def test_tar_gz_giant_pax_header(files, store, limits) -> None:
    path = hostile.tar_gz_huge_pax_header(files / "pax.tar.gz", size=80 * 1024 * 1024)
    _refused(path, store, limits, 422, "tar header record too large")


@pytest.mark.parametrize(("width", "height"), [(20000, 20000), (2000, 2000)])
def test_decompression_bomb_png(files, store, limits, width: int, height: int) -> None:
    bomb = hostile.bomb_png(width=width, height=height)
    assert len(bomb) < 100_000
    path = hostile.zip_with(files / "png.zip", "train/cat/bomb.png", bomb)
    _refused(path, store, limits, 422, "'train/cat/bomb.png'", "decompression bomb")


def test_pixel_limit_is_ours_not_pillows_global(files, store) -> None:
    before = Image.MAX_IMAGE_PIXELS
    tight = IngestLimits(max_archive_entries=100, max_expanded_bytes=10**8, max_image_pixels=63)
    _refused(
        write_zip(files / "p.zip", folder_entries(hostile.GOOD)),
        store,
        tight,
        422,
        "over the limit of 63 pixels",
    )
    assert before == Image.MAX_IMAGE_PIXELS


@pytest.mark.parametrize(
    ("name", "build", "fragments"),
    [
        ("train/cat/huge.dcm", hostile.dicom_huge_frame, ("65535x65535 = 4294836225 pixels, over the limit of",)),
        ("train/cat/cut.dcm", hostile.dicom_truncated, ("is a truncated or corrupt DICOM",)),
        ("train/cat/cine.dcm", hostile.dicom_multi_frame, ("is a multi-frame DICOM (4 frames)",)),
        ("train/cat/bomb.tif", hostile.tiff_declaring_huge_size, ("is a decompression bomb",)),
    ],
    ids=["dicom-huge-frame", "dicom-truncated", "dicom-multi-frame", "tiff-bomb"],
)
def test_hostile_dicom_and_tiff(files, store, limits, name: str, build, fragments: tuple[str, ...]) -> None:
    path = hostile.zip_with(files / "d.zip", name, build())
    _refused(path, store, limits, 422, f"image '{name}'", *fragments)


# --- unreadable content ---------------------------------------------------------------


def test_truncated_png(files, store, limits) -> None:
    path = hostile.zip_with(files / "t.zip", "train/dog/cut.png", hostile.truncated_png())
    _refused(path, store, limits, 422, "image 'train/dog/cut.png' is truncated or corrupt")


@pytest.mark.parametrize(
    ("data", "fragment"),
    [(b"just some text", "not a readable image"), (b"", "empty (0 bytes")],
)
def test_non_image_in_a_class_folder(files, store, limits, data: bytes, fragment: str) -> None:
    path = hostile.zip_with(files / "n.zip", "train/dog/notes.png", data)
    _refused(path, store, limits, 422, f"'train/dog/notes.png' is {fragment}", "PNG, JPEG")


def test_image_format_outside_the_allow_list(files, store, limits) -> None:
    path = hostile.zip_with(files / "n.zip", "train/dog/x.ppm", png_bytes(fmt="PPM"))
    _refused(path, store, limits, 422, "'train/dog/x.ppm' is not a readable image")


def test_polyglot_png_plus_zip(files, store, limits) -> None:
    path = hostile.polyglot_png_zip(files / "poly.zip")
    assert zipfile.is_zipfile(path)  # zipfile alone would happily read it
    _refused(path, store, limits, 415, "'poly.zip' is named like a .zip file", "PNG image")


def test_concatenated_zips(files, store, limits) -> None:
    _refused(
        hostile.concatenated_zips(files / "cat.zip"),
        store,
        limits,
        422,
        "unexpected bytes before its entries",
    )


def test_npz_that_is_not_a_zip(files, store, limits) -> None:
    _refused(hostile.npy_named_npz(files / "x.npz"), store, limits, 415, "not a zip archive", "single .npy array")


def test_zip_that_is_not_a_zip(files, store, limits) -> None:
    path = files / "x.zip"
    path.write_bytes(b"PK\x03\x04" + os.urandom(200))
    _refused(path, store, limits, 422, "'x.zip' is not a valid zip archive")


def test_tar_gz_that_is_not_a_tar(files, store, limits) -> None:
    path = files / "x.tar.gz"
    path.write_bytes(gzip.compress(b"not a tar at all" * 100))
    _refused(path, store, limits, 422, "'x.tar.gz' could not be read")


def test_non_utf8_names_are_reported_safely(files, store, limits) -> None:
    path = hostile.zip_non_utf8_names(files / "n.zip", raw=b"\xff\x1b[31m", image=b"not an image")
    detail = _refused(path, store, limits, 422, "not a readable image")
    assert "\x1b" not in detail and "\\xa0\\x1b[31m" in detail  # cp437 0xff is U+00A0, escaped


def test_zero_byte_file(files, store, limits) -> None:
    path = files / "empty.zip"
    path.write_bytes(b"")
    _refused(path, store, limits, 422, "'empty.zip' is empty (0 bytes)")


def test_unknown_format(files, store, limits) -> None:
    path = files / "blob.bin"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    _refused(path, store, limits, 415, "'blob.bin' is not a supported format", "Accepted: .npz")


def test_npz_with_pickled_object_array(files, store, limits) -> None:
    _refused(hostile.npz_object_array(files / "o.npz"), store, limits, 422, "'train_images' is an object array")


def test_npz_header_lying_about_its_shape(files, store, limits) -> None:
    liar = io.BytesIO()  # claims 160 MB, holds 32 bytes: numpy would allocate before reading
    header = {"descr": "|u1", "fortran_order": False, "shape": (9999999, 4, 4)}
    np.lib.format.write_array_header_1_0(liar, header)
    liar.write(bytes(32))
    labels = io.BytesIO()
    np.save(labels, np.array([0, 1]))
    with zipfile.ZipFile(files / "s.npz", "w") as archive:
        archive.writestr("train_images.npy", liar.getvalue())
        archive.writestr("train_labels.npy", labels.getvalue())
    _refused(files / "s.npz", store, limits, 422, "'train_images' declares shape (9999999, 4, 4)")


def test_npz_with_a_duplicate_member(files, store, limits) -> None:
    path = hostile.npz_duplicate_member(files / "dup.npz")
    _refused(path, store, limits, 422, "entry 'train_images.npy' appears twice")


# --- layout problems ------------------------------------------------------------------


def test_unexpected_folder_beside_train(files, store, limits) -> None:
    path = hostile.zip_with(files / "x.zip", "extra/cat/1.png", png_bytes())
    _refused(path, store, limits, 422, "unexpected folder 'extra' beside train/")


def test_val_class_unknown_to_train(files, store, limits) -> None:
    path = hostile.zip_with(files / "x.zip", "val/bird/1.png", png_bytes())
    _refused(path, store, limits, 422, "class 'bird' has no train images (it appears only in val)")


@pytest.mark.parametrize(
    ("csv", "fragment"),
    [
        ("path,label\n../0.png,cat\n", "labels.csv line 2: entry '../0.png' contains '..'"),
        ("path,label\nmissing.png,cat\n", "labels.csv line 2: 'missing.png' is not in the archive"),
        ("path,label,split\ntrain/cat/0.png,cat,holdout\n", "split 'holdout' is not one of train, val, test"),
    ],
)
def test_bad_labels_csv(files, store, limits, csv: str, fragment: str) -> None:
    path = hostile.zip_with(files / "c.zip", "labels.csv", csv.encode())
    _refused(path, store, limits, 422, fragment)


def test_upload_over_the_size_limit(files, store, limits) -> None:
    path = write_zip(files / "big.zip", folder_entries(hostile.GOOD))
    _refused(path, store, limits, 413, "upload exceeds the limit of 100 bytes", max_upload_bytes=100)
