"""``ingest_file``: one uploaded file -> a validated ``DecodedDataset`` with train/val/test.

Anything a malformed file can make the standard library, numpy or Pillow
raise becomes ``DatasetRejected`` 422 with a readable message, so no client
content can cause a 500.
"""

from __future__ import annotations

import logging
import lzma
import struct
import tarfile
import zipfile
import zlib
from pathlib import Path

from service.ingest.dataset import DecodedDataset
from service.ingest.detect import detect_format
from service.ingest.errors import DatasetRejected, printable, safe_name
from service.ingest.image_archive import parse_image_archive
from service.ingest.limits import IngestLimits
from service.ingest.npz import parse_npz
from service.ingest.splits import carve_missing_splits
from service.ingest.validate import validate_decoded

logger = logging.getLogger(__name__)

# What malformed content makes zipfile, tarfile, gzip, numpy or csv raise.
# (UnicodeDecodeError is a ValueError; BadGzipFile an OSError, handled below.)
MALFORMED_ERRORS = (
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
    tarfile.TarError,
    ValueError,
    struct.error,
    EOFError,
    zlib.error,
    lzma.LZMAError,
    NotImplementedError,  # zipfile: unsupported compression method
    RuntimeError,  # zipfile: encrypted member
    KeyError,
    IndexError,
)


def _parse(path: Path, *, kind: str, limits: IngestLimits, label: str, split_seed: int) -> DecodedDataset:
    if kind == "npz":
        decoded = parse_npz(path, limits=limits, label=label)
    else:
        decoded = parse_image_archive(path, kind=kind, limits=limits, label=label)
    validate_decoded(decoded)
    decoded = carve_missing_splits(decoded, seed=split_seed)
    validate_decoded(decoded)
    return decoded


def _readable(exc: BaseException, path: Path) -> str:
    message = printable(str(exc).replace(str(path), "the upload").replace(str(path.parent), ""))
    return f"{type(exc).__name__}: {message[:300]}" if message else type(exc).__name__


def ingest_file(path: Path, *, filename: str, limits: IngestLimits, split_seed: int = 0) -> DecodedDataset:
    """Detect, safely parse and validate the upload at ``path`` (``filename`` as the client named it).

    Returns a dataset with ``train``, ``val`` and ``test`` splits (missing
    ones carved from train, see ``service.ingest.splits``). Raises
    ``DatasetRejected`` (413 / 415 / 422) for anything wrong with the content.
    """
    path = Path(path)
    label = safe_name(filename.replace("\\", "/").rsplit("/", 1)[-1] or "upload")
    try:
        kind = detect_format(path, filename=filename, label=label, max_entries=limits.max_archive_entries)
        decoded = _parse(path, kind=kind, limits=limits, label=label, split_seed=split_seed)
    except DatasetRejected as exc:
        logger.info("rejected %s: %s", label, exc.detail)
        raise
    except MemoryError as exc:
        raise DatasetRejected(413, f"{label} is too large to decode in memory") from exc
    except OSError as exc:
        if exc.errno is not None:  # a real I/O failure on our side, not the client's content
            raise
        raise DatasetRejected(422, f"{label} could not be read: {_readable(exc, path)}") from exc
    except MALFORMED_ERRORS as exc:
        logger.info("rejected malformed %s: %r", label, exc)
        raise DatasetRejected(422, f"{label} could not be read: {_readable(exc, path)}") from exc
    logger.info(
        "ingested %s as %s: %s images, %d classes",
        label,
        decoded.format,
        {split: len(labels) for split, (_, labels) in decoded.splits.items()},
        decoded.num_classes,
    )
    return decoded
