"""Preflight for zip archives (and .npz, which are zips), before ``zipfile`` reads them.

``zipfile.ZipFile`` builds one ``ZipInfo`` per central-directory record, and a
hostile 500 MB file can hold ten million tiny records. So we first walk the
records ourselves (fixed 46-byte headers, names skipped, nothing kept) and stop
at ``max_entries``; we also refuse data before the first entry, which is how a
PNG+zip polyglot or a self-extracting archive looks.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import BinaryIO

from service.ingest.errors import DatasetRejected

_EOCD = struct.Struct("<4s4H2LH")  # end of central directory, 22 bytes
_EOCD_SIG = b"PK\x05\x06"
_LOCATOR = struct.Struct("<4sLQL")  # zip64 end-of-directory locator, 20 bytes
_LOCATOR_SIG = b"PK\x06\x07"
_EOCD64 = struct.Struct("<4sQ2H2L4Q")  # zip64 end of central directory, 56 bytes
_EOCD64_SIG = b"PK\x06\x06"
_RECORD_LEN = 46
_RECORD_SIG = b"PK\x01\x02"
_MAX_COMMENT = 65535


def _bad(label: str, why: str) -> DatasetRejected:
    return DatasetRejected(422, f"{label} is not a valid zip archive: {why}")


def _directory_location(handle: BinaryIO, *, label: str) -> tuple[int, int, int]:
    """(offset_cd, size_cd, end_of_cd) as the end records declare them."""
    file_size = handle.seek(0, 2)
    tail_len = min(file_size, _EOCD.size + _MAX_COMMENT)
    handle.seek(file_size - tail_len)
    tail = handle.read(tail_len)
    start = tail.rfind(_EOCD_SIG)
    if start < 0 or len(tail) - start < _EOCD.size:
        raise _bad(label, "no end-of-central-directory record")
    _, _, _, _, entries, size_cd, offset_cd, _ = _EOCD.unpack_from(tail, start)
    eocd_pos = file_size - tail_len + start
    if entries != 0xFFFF and size_cd != 0xFFFFFFFF and offset_cd != 0xFFFFFFFF:
        return offset_cd, size_cd, eocd_pos
    return _zip64_location(handle, eocd_pos=eocd_pos, label=label)


def _zip64_location(handle: BinaryIO, *, eocd_pos: int, label: str) -> tuple[int, int, int]:
    if eocd_pos < _LOCATOR.size:
        raise _bad(label, "zip64 locator missing")
    handle.seek(eocd_pos - _LOCATOR.size)
    sig, _, record_pos, _ = _LOCATOR.unpack(handle.read(_LOCATOR.size))
    if sig != _LOCATOR_SIG:
        raise _bad(label, "zip64 locator missing")
    handle.seek(record_pos)
    data = handle.read(_EOCD64.size)
    if len(data) != _EOCD64.size or data[:4] != _EOCD64_SIG:
        raise _bad(label, "zip64 end record missing")
    fields = _EOCD64.unpack(data)
    size_cd, offset_cd = fields[8], fields[9]
    return offset_cd, size_cd, eocd_pos - _LOCATOR.size - _EOCD64.size


def preflight_zip(path: Path, *, max_entries: int, label: str) -> int:
    """Count the central-directory records of the zip at ``path`` without building them.

    Raises ``DatasetRejected`` 413 past ``max_entries``, 422 for a broken
    directory or bytes before the first entry. ``label`` names the upload in
    messages. Returns the number of records.
    """
    with open(path, "rb") as handle:
        offset_cd, size_cd, end_cd = _directory_location(handle, label=label)
        if end_cd - size_cd != offset_cd:
            raise _bad(
                label,
                f"{end_cd - size_cd - offset_cd} unexpected bytes before its entries "
                "(a polyglot or self-extracting file)",
            )
        handle.seek(offset_cd)
        count, consumed = 0, 0
        while consumed < size_cd:  # the same walk zipfile does, keeping nothing
            header = handle.read(_RECORD_LEN)
            if len(header) != _RECORD_LEN or header[:4] != _RECORD_SIG:
                raise _bad(label, "broken central directory")
            skip = sum(struct.unpack_from("<3H", header, 28))
            handle.seek(skip, 1)
            consumed += _RECORD_LEN + skip
            count += 1
            if count > max_entries:
                raise DatasetRejected(413, f"{label} has more than {max_entries} entries (the limit)")
    return count
