"""Which parser an upload goes to: content magic first, the file name to disambiguate.

The content must be a zip, gzip or tar archive (else 415 listing the accepted
formats); a name that claims another family than the content (``x.zip`` that
is a PNG, a ``.npz`` that is a bare ``.npy``) is refused too, so a polyglot
never reaches a parser meant for something else.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

from service.ingest.errors import ACCEPTED_FORMATS, DatasetRejected
from service.ingest.zipscan import preflight_zip

KINDS = ("npz", "zip", "tar.gz", "tar")
_FAMILY = {"npz": "zip", "zip": "zip", "tar.gz": "gzip", "tar": "tar"}
_SIGNATURES = (
    (b"\x89PNG", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"\x93NUMPY", "a single .npy array"),
    (b"%PDF", "a PDF document"),
    (b"Rar!", "a RAR archive"),
    (b"7z\xbc\xaf", "a 7-Zip archive"),
)


def _family(head: bytes) -> str | None:
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return "zip"
    if head.startswith(b"\x1f\x8b"):
        return "gzip"
    if head[257:262] == b"ustar":
        return "tar"
    return None


def _kind_from_name(filename: str) -> str | None:
    name = filename.replace("\\", "/").rsplit("/", 1)[-1].lower()
    for suffix, kind in (
        (".npz", "npz"),
        (".zip", "zip"),
        (".tar.gz", "tar.gz"),
        (".tgz", "tar.gz"),
        (".tar", "tar"),
    ):
        if name.endswith(suffix):
            return kind
    return None


def _looks_like(head: bytes) -> str:
    for signature, what in _SIGNATURES:
        if head.startswith(signature):
            return f"; its content looks like {what}"
    return ""


def _zip_kind(path: Path, *, label: str) -> str:
    """A zip with no telling name: npz when every member is a .npy array."""
    with zipfile.ZipFile(path) as archive:
        names = [name for name in archive.namelist() if not name.endswith("/")]
    return "npz" if names and all(name.endswith(".npy") for name in names) else "zip"


def detect_format(path: Path, *, filename: str, label: str, max_entries: int) -> str:
    """One of ``KINDS`` for the upload at ``path``; raises ``DatasetRejected`` 415 / 422."""
    with open(path, "rb") as handle:
        head = handle.read(512)
    if not head:
        raise DatasetRejected(422, f"{label} is empty (0 bytes)")
    family, named = _family(head), _kind_from_name(filename)
    if family is None and named == "tar":
        return "tar"  # pre-POSIX tar has no magic; tarfile's checksum decides
    if family is None and named is not None:
        raise DatasetRejected(
            415,
            f"{label} is named like a .{named} file but its content is not a {_FAMILY[named]} archive"
            f"{_looks_like(head)}. Accepted: {ACCEPTED_FORMATS}",
        )
    if family is None:
        raise DatasetRejected(
            415, f"{label} is not a supported format{_looks_like(head)}. Accepted: {ACCEPTED_FORMATS}"
        )
    if named is not None and _FAMILY[named] != family:
        raise DatasetRejected(
            415,
            f"{label} is named like a .{named} file but its content is a {family} archive. "
            f"Accepted: {ACCEPTED_FORMATS}",
        )
    if named is not None:
        return named
    if family == "zip":
        preflight_zip(path, max_entries=max_entries, label=label)
        return _zip_kind(path, label=label)
    return "tar.gz" if family == "gzip" else "tar"
