"""The blob store: datasets, checkpoints and artefacts behind one interface without paths.

``make_blob_store`` picks the implementation from ``RAREFIT_STORAGE_URL``:
``file:///srv/rarefit`` (a directory, the embedded default under the data
dir) or ``s3://bucket/prefix`` (S3-compatible object storage, endpoint from
``RAREFIT_S3_ENDPOINT_URL``, credentials from the standard AWS chain).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

from service.storage.blob import (
    BlobCorrupt,
    BlobInfo,
    BlobStore,
    StorageFull,
    StorageUnavailable,
    full_as_storage_full,
    full_cause,
    sha256_file,
    validate_key,
)
from service.storage.local import LocalBlobStore

if TYPE_CHECKING:
    from service.config import Settings

__all__ = [
    "BlobCorrupt",
    "BlobInfo",
    "BlobStore",
    "LocalBlobStore",
    "StorageFull",
    "StorageUnavailable",
    "full_as_storage_full",
    "full_cause",
    "make_blob_store",
    "parse_storage_url",
    "sha256_file",
    "validate_key",
]

SCHEMES = ("file", "s3")


def parse_storage_url(url: str) -> tuple[str, str, str]:
    """``(scheme, location, prefix)``: ``("file", "/srv/rarefit", "")`` or ``("s3", "bucket", "prefix")``."""
    parts = urlsplit(url)
    if parts.scheme not in SCHEMES:
        raise ValueError(
            f"storage URL {url!r}: scheme must be one of {list(SCHEMES)} (file:///dir or s3://bucket/prefix)"
        )
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost") or not parts.path.startswith("/"):
            raise ValueError(f"storage URL {url!r}: a file URL needs an absolute path, e.g. file:///srv/rarefit")
        return "file", unquote(parts.path), ""
    if not parts.netloc:
        raise ValueError(f"storage URL {url!r}: an s3 URL needs a bucket, e.g. s3://rarefit/blobs")
    return "s3", parts.netloc, parts.path.strip("/")


def make_blob_store(settings: Settings) -> BlobStore:
    """The blob store named by ``settings.storage_url`` (default: ``settings.blob_dir``)."""
    if settings.storage_url is None:
        return LocalBlobStore(settings.blob_dir)
    scheme, location, prefix = parse_storage_url(settings.storage_url)
    if scheme == "file":
        return LocalBlobStore(Path(location))
    from service.storage.s3 import S3BlobStore  # boto3 loads only where S3 is used

    return S3BlobStore(
        bucket=location,
        prefix=prefix,
        endpoint_url=settings.s3_endpoint_url,
        multipart_bytes=settings.s3_multipart_bytes,
        retry_seconds=settings.storage_retry_seconds,
    )
