"""From a multipart upload to a stored canonical dataset: the route's one entry point."""

from __future__ import annotations

import functools
import logging
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import anyio.to_thread
from starlette.datastructures import UploadFile

from service.ingest import DatasetRejected, DecodedDataset, IngestLimits, ingest_file, store_canonical, summarize
from service.ingest.diagnostics import diagnose
from service.ingest.errors import mib
from service.storage import BlobStore, validate_key
from service.storage.blob import full_as_storage_full

logger = logging.getLogger(__name__)

CHUNK_BYTES = 1024 * 1024


@dataclass(frozen=True)
class IngestResult:
    """What the route stores on the dataset row."""

    format: str
    summary: dict  # summarize(): num_classes, class_names, image_shape, pixel_bits, splits, imbalance_ratio
    size_bytes: int
    blob_prefix: str
    notes: list[str] = field(default_factory=list)
    diagnostics: dict = field(default_factory=dict)  # service.ingest.diagnostics
    advice: list[dict] = field(default_factory=list)


async def save_upload(upload: UploadFile, *, dest: Path, max_bytes: int) -> int:
    """Copy ``upload`` to ``dest`` in 1 MiB chunks; 413 (partial file deleted) past ``max_bytes``."""
    total = 0
    try:
        with open(dest, "wb") as out:
            while chunk := await upload.read(CHUNK_BYTES):
                total += len(chunk)
                if total > max_bytes:
                    raise DatasetRejected(413, f"upload exceeds the limit of {mib(max_bytes)}")
                await anyio.to_thread.run_sync(out.write, chunk)
    except BaseException:
        dest.unlink(missing_ok=True)
        raise
    return total


def _parse_and_store(
    path: Path, *, filename: str, limits: IngestLimits, store: BlobStore, prefix: str
) -> tuple[DecodedDataset, int]:
    decoded = ingest_file(path, filename=filename, limits=limits, split_seed=0)
    stored = store_canonical(decoded, store=store, prefix=prefix, scratch=path.parent)
    return decoded, stored.size_bytes


async def ingest_upload(
    upload: UploadFile,
    *,
    store: BlobStore,
    dataset_id: str,
    limits: IngestLimits,
    max_upload_bytes: int,
    scratch: Path,
) -> IngestResult:
    """Save (to this process's ``scratch`` folder), parse (in a worker thread: CPU work), validate and store
    one uploaded dataset.

    The temporary upload is always deleted; on any failure nothing is left
    under ``datasets/{dataset_id}``. Content problems raise ``DatasetRejected``;
    a full disk or object store raises ``StorageFull``.
    """
    prefix = validate_key(f"datasets/{dataset_id}")
    filename = upload.filename or "upload"
    scratch.mkdir(parents=True, exist_ok=True)
    tmp = scratch / f"upload-{uuid.uuid4().hex}"
    try:
        with full_as_storage_full("the API's staging disk"):
            await save_upload(upload, dest=tmp, max_bytes=max_upload_bytes)
            work = functools.partial(
                _parse_and_store, tmp, filename=filename, limits=limits, store=store, prefix=prefix
            )
            decoded, size_bytes = await anyio.to_thread.run_sync(work)
    except BaseException:
        store.delete(prefix)
        raise
    finally:
        tmp.unlink(missing_ok=True)
    diagnostics, advice = await anyio.to_thread.run_sync(diagnose, decoded)
    return IngestResult(
        format=decoded.format,
        summary=summarize(decoded),
        size_bytes=size_bytes,
        blob_prefix=prefix,
        notes=list(decoded.notes),
        diagnostics=diagnostics,
        advice=advice,
    )
