"""Blobs as files under one root directory: the embedded default (``file:///…``).

Every write lands atomically (a temp file in the destination directory,
fsync, ``os.replace``), so a reader never sees half a file and a crash leaves
at worst a stray ``*.part`` file, never a torn blob. Out of space or quota
(``ENOSPC``, ``EDQUOT``) raises ``StorageFull`` and leaves no partial file.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO

from service.storage.blob import (
    CHUNK_BYTES,
    STAGING_DIR,
    BlobInfo,
    Keys,
    copy_hashed,
    full_as_storage_full,
    sha256_file,
    under,
    validate_key,
    verify,
)


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


def _link_or_copy(src: Path, dest: Path) -> None:
    try:
        os.link(src, dest)
    except OSError:  # another filesystem, or one without hard links
        shutil.copyfile(src, dest)


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
        """The real path of ``key`` (parents created): for this store and its tests only."""
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def write(self, key: str, data: bytes) -> BlobInfo:
        with full_as_storage_full("the blob store's disk"):
            return self._write_chunks(self.local_path(key), [bytes(data)])

    def publish(self, key: str, src: Path) -> BlobInfo:
        """Move the finished file ``src`` to ``key`` atomically (a rename on the same filesystem)."""
        with full_as_storage_full("the blob store's disk"):
            return self._move_into_place(Path(src), self.local_path(key))

    def _write_chunks(self, dest: Path, chunks: Iterable[bytes]) -> BlobInfo:
        fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as out:
                info = copy_hashed(iter(chunks), out)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp_name, dest)
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise
        _fsync_dir(dest.parent)
        return info

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
                info = self._write_chunks(dest, iter(lambda: handle.read(CHUNK_BYTES), b""))
            src.unlink()
            return info
        _fsync_dir(dest.parent)
        return info

    def open_read(self, key: str) -> BinaryIO:
        path = self._path(key)
        if not path.is_file():
            raise FileNotFoundError(f"no blob {key!r}")
        return open(path, "rb")

    def download(self, key: str, dest: Path, *, sha256: str | None = None) -> BlobInfo:
        """Put a copy of ``key`` at the local file ``dest`` (atomically), checking ``sha256`` when given.

        On the same filesystem the copy is a hard link: a blob is never changed in place (every write
        replaces the file), so the staged copy keeps its bytes whatever happens to the key later.
        """
        src, dest = self._path(key), Path(dest)
        if not src.is_file():
            raise FileNotFoundError(f"no blob {key!r}")
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex}.part")
        try:
            with full_as_storage_full("the staging disk"):
                _link_or_copy(src, tmp)
            info = BlobInfo(size=tmp.stat().st_size, sha256=sha256_file(tmp))
            verify(key, info, sha256)
            os.replace(tmp, dest)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return info

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def size(self, key: str) -> int:
        path = self._path(key)
        if not path.is_file():
            raise FileNotFoundError(f"no blob {key!r}")
        return path.stat().st_size

    def list(self, prefix: str) -> Keys:
        """Every key equal to ``prefix`` or under ``prefix/``, sorted."""
        path = self._path(prefix.rstrip("/"))
        if path.is_file():
            return [prefix.rstrip("/")]
        if not path.is_dir():
            return []
        keys = (p.relative_to(self.root).as_posix() for p in path.rglob("*") if p.is_file())
        return sorted(k for k in keys if under(k, prefix) and not Path(k).name.endswith(".part"))

    def delete(self, prefix: str) -> None:
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

    def check(self) -> None:
        """Readiness: raise OSError unless the root is writable (writes and removes a probe)."""
        staging = self.root / STAGING_DIR
        staging.mkdir(parents=True, exist_ok=True)
        probe = staging / f"probe-{uuid.uuid4().hex}"
        try:
            probe.write_bytes(b"ok")
        finally:
            probe.unlink(missing_ok=True)
