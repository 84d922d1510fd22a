"""What every blob store offers, and the errors it speaks in.

Keys are relative posix paths (``datasets/<id>/train_images.npy``); nothing
outside a store's own module knows whether they live in a directory or in an
object store. Readers stream (``open_read``) or copy a blob into their own
staging folder (``download``); writers hand over bytes (``write``) or a
finished local file (``publish``), and either lands atomically: a reader sees
the old blob, the whole new one, or none, never half of one.
"""

from __future__ import annotations

import errno
import hashlib
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol, runtime_checkable

CHUNK_BYTES = 1024 * 1024
_KEY_CHARS = re.compile(r"^[A-Za-z0-9_./-]+$")
# Reserved for the local store's own temporary files; no key may reach it.
STAGING_DIR = ".staging"
FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
# What ``list`` returns; named so the method called ``list`` does not shadow the builtin in annotations.
Keys = list[str]


@dataclass(frozen=True)
class BlobInfo:
    size: int
    sha256: str


class StorageFull(OSError):
    """Out of space or over quota: a fault of the deployment, never the client's or the job's."""

    def __init__(self, message: str) -> None:
        super().__init__(errno.ENOSPC, message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class StorageUnavailable(ConnectionError):
    """The blob store stayed unreachable for the whole retry budget."""


class BlobCorrupt(ValueError):
    """A blob's bytes do not match the sha256 recorded when it was written."""


@runtime_checkable
class BlobStore(Protocol):
    """What the service and the workers need from blob storage (no paths: see the module docstring)."""

    def open_read(self, key: str) -> BinaryIO: ...
    def write(self, key: str, data: bytes) -> BlobInfo: ...
    def publish(self, key: str, src: Path) -> BlobInfo: ...
    def download(self, key: str, dest: Path, *, sha256: str | None = None) -> BlobInfo: ...
    def exists(self, key: str) -> bool: ...
    def size(self, key: str) -> int: ...
    def list(self, prefix: str) -> Keys: ...
    def delete(self, prefix: str) -> None: ...
    def check(self) -> None: ...


def validate_key(key: str) -> str:
    """Return ``key`` if it is a safe relative posix path, else raise ValueError naming it.

    Allowed: segments of ``[A-Za-z0-9_.-]`` joined by ``/``; no absolute path,
    no empty, ``.`` or ``..`` segment, no backslash, not the staging folder.
    """
    if not isinstance(key, str):
        raise TypeError(f"blob key must be a str, got {type(key).__name__}")
    if not key or key.startswith("/") or "\\" in key or not _KEY_CHARS.match(key):
        raise ValueError(f"invalid blob key {key!r}: use a relative path of [A-Za-z0-9_.-] segments")
    parts = key.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise ValueError(f"invalid blob key {key!r}: empty, '.' or '..' segment")
    if parts[0] == STAGING_DIR:
        raise ValueError(f"invalid blob key {key!r}: {STAGING_DIR!r} is reserved")
    return key


def under(key: str, prefix: str) -> bool:
    """Folder semantics: ``datasets/ab/x`` and ``datasets/ab`` are under ``datasets/ab``; ``datasets/abc`` is not."""
    prefix = prefix.rstrip("/")
    return key == prefix or key.startswith(prefix + "/")


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def copy_hashed(chunks: Iterator[bytes], out: BinaryIO) -> BlobInfo:
    """Write ``chunks`` to ``out``, hashing on the way."""
    digest, size = hashlib.sha256(), 0
    for chunk in chunks:
        digest.update(chunk)
        size += len(chunk)
        out.write(chunk)
    return BlobInfo(size=size, sha256=digest.hexdigest())


def verify(key: str, info: BlobInfo, sha256: str | None) -> None:
    """``BlobCorrupt`` unless the bytes read hash to ``sha256`` (when one was recorded)."""
    if sha256 is not None and info.sha256 != sha256.lower():
        raise BlobCorrupt(f"blob {key!r} has sha256 {info.sha256}, expected {sha256}: corrupt or tampered")


@contextmanager
def full_as_storage_full(where: str) -> Iterator[None]:
    """Turn ``ENOSPC``/``EDQUOT`` into ``StorageFull`` naming ``where`` (never a path)."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in FULL_ERRNOS or isinstance(exc, StorageFull):
            raise
        cause = "over its disk quota (EDQUOT)" if exc.errno == errno.EDQUOT else "out of disk space (ENOSPC)"
        raise StorageFull(f"{where} is {cause}") from exc


def full_cause(exc: BaseException) -> str | None:
    """A readable cause when ``exc`` (or what it was raised from) means "out of space or quota"."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, StorageFull):
            return seen.message
        if isinstance(seen, OSError) and seen.errno in FULL_ERRNOS:
            name = errno.errorcode.get(seen.errno, str(seen.errno))
            return f"no space left on the server's disk ({name}: {seen.strerror or 'out of space'})"
        seen = seen.__cause__ or seen.__context__
    return None
