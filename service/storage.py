"""The blob store: datasets, checkpoints and artefacts behind one small interface.

Keys are relative posix paths (``datasets/<id>/train_images.npy``) so the
same code can later sit on S3-compatible storage. ``LocalBlobStore`` keeps them
under one root directory; every write lands atomically (a temp file in the
destination directory, fsync, ``os.replace``), so a reader never sees half a
file and a crash leaves at worst a stray ``*.part`` file, never a torn blob.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import re
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Protocol, runtime_checkable

if TYPE_CHECKING:
    from service.config import Settings

logger = logging.getLogger(__name__)

_KEY_CHARS = re.compile(r"^[A-Za-z0-9_./-]+$")
_CHUNK = 1024 * 1024
# The staging folder lives inside the root (same filesystem, so renames are
# atomic); its name starts with a dot and is reserved, so no key can reach it.
STAGING_DIR = ".staging"


@dataclass(frozen=True)
class BlobInfo:
    size: int
    sha256: str


@runtime_checkable
class BlobStore(Protocol):
    """What the service and the workers need from blob storage."""

    def put_file(self, key: str, src: Path, *, move: bool = False) -> BlobInfo: ...
    def put_bytes(self, key: str, data: bytes) -> BlobInfo: ...
    def open(self, key: str) -> BinaryIO: ...
    def local_path(self, key: str) -> Path: ...
    def exists(self, key: str) -> bool: ...
    def size(self, key: str) -> int: ...
    def delete_prefix(self, prefix: str) -> None: ...
    def tmp_dir(self) -> Path: ...
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


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _fsync_dir(path: Path) -> None:
    # Makes the rename itself durable; not every filesystem supports it.
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class LocalBlobStore:
    """Blobs as files under ``root`` (a local or network filesystem)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).expanduser().resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def __repr__(self) -> str:
        return f"LocalBlobStore({str(self.root)!r})"

    def _path(self, key: str) -> Path:
        return self.root.joinpath(*validate_key(key).split("/"))

    def local_path(self, key: str) -> Path:
        """The real path of ``key`` (parents created), for mmap reads and direct writes."""
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def put_file(self, key: str, src: Path, *, move: bool = False) -> BlobInfo:
        """Store ``src`` under ``key`` atomically; ``move=True`` renames instead of copying."""
        dest = self.local_path(key)
        src = Path(src)
        if move:
            return self._move_into_place(src, dest)
        with open(src, "rb") as handle:
            return self._write_stream(dest, handle)

    def put_bytes(self, key: str, data: bytes) -> BlobInfo:
        dest = self.local_path(key)
        return self._write_chunks(dest, [bytes(data)])

    def _write_stream(self, dest: Path, handle: BinaryIO) -> BlobInfo:
        return self._write_chunks(dest, iter(lambda: handle.read(_CHUNK), b""))

    def _write_chunks(self, dest: Path, chunks) -> BlobInfo:
        digest, size = hashlib.sha256(), 0
        fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as out:
                for chunk in chunks:
                    digest.update(chunk)
                    size += len(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp_name, dest)
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise
        _fsync_dir(dest.parent)
        return BlobInfo(size=size, sha256=digest.hexdigest())

    def _move_into_place(self, src: Path, dest: Path) -> BlobInfo:
        with open(src, "rb") as handle:
            os.fsync(handle.fileno())
        info = BlobInfo(size=src.stat().st_size, sha256=sha256_file(src))
        try:
            os.replace(src, dest)
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                raise
            # Different filesystem: fall back to an atomic copy, then drop the source.
            with open(src, "rb") as handle:
                info = self._write_stream(dest, handle)
            src.unlink()
            return info
        _fsync_dir(dest.parent)
        return info

    def open(self, key: str) -> BinaryIO:
        path = self._path(key)
        if not path.is_file():
            raise FileNotFoundError(f"no blob {key!r}")
        return open(path, "rb")

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def size(self, key: str) -> int:
        path = self._path(key)
        if not path.is_file():
            raise FileNotFoundError(f"no blob {key!r}")
        return path.stat().st_size

    def delete_prefix(self, prefix: str) -> None:
        """Delete the blob ``prefix`` and every blob under ``prefix/`` (folder semantics).

        ``datasets/ab`` removes ``datasets/ab/...`` but not ``datasets/abc``.
        Missing prefixes are fine (idempotent).
        """
        path = self._path(prefix.rstrip("/"))
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()
        self._prune_empty_parents(path.parent)

    def _prune_empty_parents(self, folder: Path) -> None:
        while folder != self.root and self.root in folder.parents:
            try:
                folder.rmdir()
            except OSError:
                return
            folder = folder.parent

    def tmp_dir(self) -> Path:
        """A staging folder inside the root (same filesystem, so ``os.replace`` is atomic)."""
        path = self.root / STAGING_DIR
        path.mkdir(parents=True, exist_ok=True)
        return path

    def check(self) -> None:
        """Readiness: raise OSError unless the root is writable (writes and removes a probe)."""
        probe = self.tmp_dir() / f"probe-{uuid.uuid4().hex}"
        try:
            probe.write_bytes(b"ok")
        finally:
            probe.unlink(missing_ok=True)


def make_blob_store(settings: Settings) -> BlobStore:
    """The blob store named by the settings (a local directory: ``settings.blob_dir``)."""
    return LocalBlobStore(settings.blob_dir)
