"""Safe, read-only access to the members of a zip, tar or tar.gz upload.

Every entry is checked before any is read: no absolute paths, no ``..``, no
links, devices, fifos or other non-regular files, no encrypted entries; the
entry count and the total declared size are capped and a zip entry with a
bomb-like compression ratio is refused. Nothing is ever extracted to disk:
``read(member)`` streams one member into memory with a byte counter (headers
are never trusted) and tar.gz decompression is capped as a whole, so a lying
header cannot inflate past the limits. ``__MACOSX/``, dotfiles and
``Thumbs.db`` are skipped after they pass the same checks.
"""

from __future__ import annotations

import gzip
import re
import stat
import tarfile
import zipfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from service.ingest.errors import DatasetRejected, mib, safe_name
from service.ingest.limits import IngestLimits
from service.ingest.zipscan import preflight_zip

_CHUNK = 1024 * 1024
_DRIVE = re.compile(r"^[A-Za-z]:")
_JUNK_NAMES = {"Thumbs.db", "desktop.ini"}
# Deflate tops out near 1032:1 on constant data; real images and arrays stay far below.
BOMB_RATIO = 1000
BOMB_MIN_BYTES = 16 * 1024 * 1024
# tar headers, pax records and padding on top of the member data, per entry.
_TAR_OVERHEAD = 4096
_MAX_SINGLE_READ = 64 * 1024 * 1024


@dataclass(frozen=True)
class Member:
    """One regular file in the archive: normalised posix ``name`` and declared ``size``."""

    name: str
    size: int
    ref: object  # the ZipInfo / TarInfo behind it


def normalise_name(raw: str) -> str:
    """``raw`` as a relative posix path ('' for the root); raise 422 if absolute or escaping."""
    if "\x00" in raw:
        raise DatasetRejected(422, f"entry {safe_name(raw)} has a NUL byte in its name")
    name = raw.replace("\\", "/")  # some Windows tools write backslash separators
    if name.startswith("/") or _DRIVE.match(name):
        raise DatasetRejected(422, f"entry {safe_name(raw)} has an absolute path; only relative paths are allowed")
    parts = [part for part in name.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise DatasetRejected(422, f"entry {safe_name(raw)} contains '..' (path traversal)")
    return "/".join(parts)


def is_junk(name: str) -> bool:
    """Files archivers add that are not data: ``__MACOSX/``, dotfiles, ``Thumbs.db``."""
    parts = name.split("/")
    return any(p == "__MACOSX" or p.startswith(".") for p in parts) or parts[-1] in _JUNK_NAMES


class SafeArchive:
    """Checked members of one archive and a capped ``read``; use via ``open_archive``."""

    def __init__(self, *, members: list[Member], opener, limits: IngestLimits, label: str) -> None:
        self.members = members
        self._opener = opener
        self._limit = limits.max_expanded_bytes
        self._budget = limits.max_expanded_bytes
        self._label = label

    def read(self, member: Member) -> bytes:
        """The member's bytes, refusing more than its declared size or the total budget."""
        chunks, count = [], 0
        with self._opener(member.ref) as handle:
            while chunk := handle.read(_CHUNK):
                count += len(chunk)
                if count > member.size:
                    raise DatasetRejected(
                        422,
                        f"entry {safe_name(member.name)} holds more than the {member.size} bytes its header declares",
                    )
                chunks.append(chunk)
        self._budget -= count
        if self._budget < 0:
            raise DatasetRejected(413, f"{self._label} expands beyond the limit of {mib(self._limit)}")
        return b"".join(chunks)


class EntryTally:
    """Counts entries and declared bytes against the limits while members are checked."""

    def __init__(self, limits: IngestLimits, label: str) -> None:
        self.limits, self.label = limits, label
        self.entries = 0
        self.declared = 0

    def entry(self) -> None:
        self.entries += 1
        if self.entries > self.limits.max_archive_entries:
            raise DatasetRejected(
                413, f"{self.label} has more than {self.limits.max_archive_entries} entries (the limit)"
            )

    def add(self, name: str, size: int) -> None:
        self.declared += size
        if self.declared > self.limits.max_expanded_bytes:
            raise DatasetRejected(
                413,
                f"{self.label} expands to more than the limit of {mib(self.limits.max_expanded_bytes)} "
                f"(reached at entry {safe_name(name)})",
            )


def _zip_is_dir(info: zipfile.ZipInfo, name: str) -> bool:
    """Directory or regular file; raise 422 for links, devices and other special entries."""
    mode = info.external_attr >> 16
    kind = stat.S_IFMT(mode)
    if stat.S_ISLNK(mode):
        raise DatasetRejected(422, f"entry {safe_name(name)} is a symbolic link; links are not allowed")
    if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
        raise DatasetRejected(422, f"entry {safe_name(name)} is a device, fifo or socket, not a regular file")
    return info.is_dir() or kind == stat.S_IFDIR


def check_zip_entry(info: zipfile.ZipInfo, tally: EntryTally) -> Member | None:
    tally.entry()
    name = normalise_name(info.filename)
    if _zip_is_dir(info, name) or not name:
        return None
    if info.flag_bits & 0x1:
        raise DatasetRejected(422, f"entry {safe_name(name)} is encrypted; encrypted archives are not supported")
    tally.add(name, info.file_size)
    if info.file_size > BOMB_MIN_BYTES and info.file_size > BOMB_RATIO * max(info.compress_size, 1):
        raise DatasetRejected(
            422,
            f"entry {safe_name(name)} expands {info.file_size // max(info.compress_size, 1)}:1 "
            f"({info.file_size} bytes from {info.compress_size}); refusing a likely zip bomb",
        )
    return Member(name=name, size=info.file_size, ref=info)


def _check_tar_entry(info: tarfile.TarInfo, tally: EntryTally) -> Member | None:
    tally.entry()
    name = normalise_name(info.name)
    if info.isdir() or (not name and info.isfile()):
        return None
    if info.issym() or info.islnk():
        raise DatasetRejected(422, f"entry {safe_name(name)} is a link; links are not allowed")
    if info.ischr() or info.isblk() or info.isfifo():
        raise DatasetRejected(422, f"entry {safe_name(name)} is a device or fifo, not a regular file")
    if not info.isfile() or info.issparse():
        raise DatasetRejected(422, f"entry {safe_name(name)} is not a regular file")
    tally.add(name, info.size)
    return Member(name=name, size=info.size, ref=info)


def collect_members(checked: Iterator[Member | None]) -> list[Member]:
    """Checked members minus directories and junk; a name seen twice is refused (422)."""
    members, seen = [], set()
    for member in checked:
        if member is None:
            continue
        if member.name in seen:
            raise DatasetRejected(422, f"entry {safe_name(member.name)} appears twice in the archive")
        seen.add(member.name)
        if not is_junk(member.name):
            members.append(member)
    return members


class _CappedStream:
    """Seekable view of a (decompressed) tar stream that refuses to go past ``cap`` bytes.

    tarfile reads pax / long-name headers whole and skips data by seeking, so
    the cap is enforced on positions, before gzip inflates anything, and a
    single read is bounded so no header record can claim gigabytes of memory.
    """

    def __init__(self, raw: BinaryIO, *, cap: int, label: str) -> None:
        self.raw, self.cap, self.label = raw, cap, label

    def _guard(self, end: int) -> None:
        if end > self.cap:
            raise DatasetRejected(413, f"{self.label} decompresses to more than the limit of {mib(self.cap)}")

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0 or size > _MAX_SINGLE_READ:
            # Member data is read in 1 MiB chunks; only a hostile pax or long-name
            # header asks for more in one go, and tarfile would hold it all in memory.
            raise DatasetRejected(422, f"{self.label} has a tar header record too large to read safely")
        data = self.raw.read(size)
        self._guard(self.raw.tell())
        return data

    def seek(self, offset: int, whence: int = 0) -> int:
        target = offset if whence == 0 else self.raw.tell() + offset if whence == 1 else None
        if target is None:
            raise ValueError("seeking from the end is not supported on a compressed stream")
        self._guard(target)
        return self.raw.seek(target)

    def tell(self) -> int:
        return self.raw.tell()


def _open_tar(path: Path, kind: str, limits: IngestLimits, label: str, stack: ExitStack) -> tarfile.TarFile:
    if kind == "tar":
        raw: BinaryIO = stack.enter_context(open(path, "rb"))  # noqa: SIM115 - closed by the stack
    else:
        raw = stack.enter_context(gzip.GzipFile(path, "rb"))
    cap = limits.max_expanded_bytes + _TAR_OVERHEAD * (limits.max_archive_entries + 4)
    capped = _CappedStream(raw, cap=cap, label=label)
    return stack.enter_context(tarfile.open(fileobj=capped, mode="r:"))  # type: ignore[arg-type]


@contextmanager
def open_archive(path: Path, *, kind: str, limits: IngestLimits, label: str) -> Iterator[SafeArchive]:
    """Open ``path`` (``kind`` 'zip', 'tar' or 'tar.gz'), check every entry, yield a ``SafeArchive``."""
    if kind not in ("zip", "tar", "tar.gz"):
        raise ValueError(f"kind must be 'zip', 'tar' or 'tar.gz', got {kind!r}")
    tally = EntryTally(limits, label)
    with ExitStack() as stack:
        if kind == "zip":
            preflight_zip(path, max_entries=limits.max_archive_entries, label=label)
            archive = stack.enter_context(zipfile.ZipFile(path))
            members = collect_members(check_zip_entry(info, tally) for info in archive.infolist())
            opener = archive.open
        else:
            tar = _open_tar(path, kind, limits, label, stack)
            members = collect_members(_check_tar_entry(info, tally) for info in tar)
            opener = _tar_opener(tar)
        yield SafeArchive(members=members, opener=opener, limits=limits, label=label)


def _tar_opener(tar: tarfile.TarFile):
    def open_member(info: tarfile.TarInfo):
        handle = tar.extractfile(info)
        if handle is None:  # pragma: no cover - only regular files get this far
            raise DatasetRejected(422, f"entry {safe_name(info.name)} cannot be read")
        return handle

    return open_member
