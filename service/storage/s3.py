"""Blobs as objects in an S3-compatible bucket (AWS S3, MinIO, Ceph …): ``s3://bucket/prefix``.

boto3 does the protocol: credentials come from the standard AWS chain
(environment, ``~/.aws``, instance or pod roles), large files go up in
multipart uploads (``upload_file`` above ``multipart_bytes``), and a PUT or a
completed multipart upload is atomic, so a reader never sees half an object.
Each object carries its sha256 in its metadata.

An unreachable endpoint is retried with backoff for ``retry_seconds`` (an
outage of a few seconds costs a pause, not a job), then ``StorageUnavailable``.
Out of space or quota (MinIO's ``XMinioStorageFull``, HTTP 507, quota codes)
raises ``StorageFull``; a missing key raises ``FileNotFoundError``.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

import boto3
from boto3.exceptions import S3UploadFailedError
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as BotoConnectionError

from service.storage.blob import (
    CHUNK_BYTES,
    BlobInfo,
    Keys,
    StorageFull,
    StorageUnavailable,
    copy_hashed,
    sha256_file,
    under,
    validate_key,
    verify,
)

logger = logging.getLogger(__name__)
T = TypeVar("T")

_MISSING = frozenset({"NoSuchKey", "404", "NotFound"})
_FULL = frozenset({"XMinioStorageFull", "XMinioAdminBucketQuotaExceeded", "QuotaExceeded", "InsufficientStorage"})
_TRANSIENT_STATUS = frozenset({500, 502, 503, 504})
FIRST_DELAY_SECONDS = 0.2
MAX_DELAY_SECONDS = 4.0


class S3BlobStore:
    """Blobs under ``prefix/`` in ``bucket``."""

    def __init__(
        self,
        *,
        bucket: str,
        prefix: str = "",
        endpoint_url: str | None = None,
        multipart_bytes: int = 8 * 1024 * 1024,
        retry_seconds: float = 30.0,
    ) -> None:
        self.bucket, self.prefix = bucket, prefix.strip("/")
        self.endpoint_url, self.retry_seconds = endpoint_url, retry_seconds
        config = Config(connect_timeout=5, read_timeout=60, retries={"max_attempts": 2, "mode": "standard"})
        self._client = boto3.session.Session().client("s3", endpoint_url=endpoint_url, config=config)
        self._transfer = TransferConfig(multipart_threshold=multipart_bytes, multipart_chunksize=multipart_bytes)

    def __repr__(self) -> str:
        return f"S3BlobStore('s3://{self.bucket}/{self.prefix}', endpoint={self.endpoint_url!r})"

    def _name(self, key: str) -> str:
        key = validate_key(key.rstrip("/"))
        return f"{self.prefix}/{key}" if self.prefix else key

    def _key(self, name: str) -> str:
        return name[len(self.prefix) + 1 :] if self.prefix else name

    # --- writes -----------------------------------------------------------
    def write(self, key: str, data: bytes) -> BlobInfo:
        data = bytes(data)
        info = BlobInfo(size=len(data), sha256=hashlib.sha256(data).hexdigest())
        put = self._client.put_object
        self._call(lambda: put(Bucket=self.bucket, Key=self._name(key), Body=data, Metadata={"sha256": info.sha256}))
        return info

    def publish(self, key: str, src: Path) -> BlobInfo:
        """Upload the finished file ``src`` (multipart when large), then delete it."""
        src = Path(src)
        info = BlobInfo(size=src.stat().st_size, sha256=sha256_file(src))
        extra = {"Metadata": {"sha256": info.sha256}}
        upload = self._client.upload_file
        self._call(lambda: upload(str(src), self.bucket, self._name(key), ExtraArgs=extra, Config=self._transfer))
        src.unlink()
        return info

    # --- reads ------------------------------------------------------------
    def open_read(self, key: str) -> BinaryIO:
        """A streaming body (read in chunks; close it, or use it in ``with``)."""
        response = self._call(lambda: self._client.get_object(Bucket=self.bucket, Key=self._name(key)), key=key)
        return response["Body"]

    def download(self, key: str, dest: Path, *, sha256: str | None = None) -> BlobInfo:
        """Stream ``key`` into the local file ``dest`` (atomically), hashing on the way; ``BlobCorrupt`` on a
        mismatch with ``sha256``. A connection lost mid-stream starts the copy again."""
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        info = self._call(lambda: self._copy_to(key, dest), key=key)
        try:
            verify(key, info, sha256)
        except ValueError:
            dest.unlink(missing_ok=True)
            raise
        return info

    def _copy_to(self, key: str, dest: Path) -> BlobInfo:
        body = self._client.get_object(Bucket=self.bucket, Key=self._name(key))["Body"]
        fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as out, body:
                info = copy_hashed(iter(lambda: body.read(CHUNK_BYTES), b""), out)
            os.replace(tmp_name, dest)
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise
        return info

    def exists(self, key: str) -> bool:
        try:
            self._head(key)
        except FileNotFoundError:
            return False
        return True

    def size(self, key: str) -> int:
        return int(self._head(key)["ContentLength"])

    def _head(self, key: str) -> dict[str, Any]:
        return self._call(lambda: self._client.head_object(Bucket=self.bucket, Key=self._name(key)), key=key)

    def list(self, prefix: str) -> Keys:
        """Every key equal to ``prefix`` or under ``prefix/``, sorted."""
        name = self._name(prefix)
        return sorted(key for key in self._call(lambda: self._list_names(name)) if under(key, prefix))

    def _list_names(self, name: str) -> Keys:
        pages = self._client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=name)
        return [self._key(item["Key"]) for page in pages for item in page.get("Contents", ())]

    def delete(self, prefix: str) -> None:
        """Delete the blob ``prefix`` and every blob under ``prefix/``; missing ones are fine."""
        keys = self.list(prefix)
        for start in range(0, len(keys), 1000):  # the most one DeleteObjects request takes
            batch = {"Objects": [{"Key": self._name(key)} for key in keys[start : start + 1000]], "Quiet": True}
            self._call(functools.partial(self._client.delete_objects, Bucket=self.bucket, Delete=batch))

    def check(self) -> None:
        """Readiness: the bucket answers (raises otherwise)."""
        self._call(lambda: self._client.head_bucket(Bucket=self.bucket), budget=0.0)

    # --- errors and retries -----------------------------------------------
    def _call(self, action: Callable[[], T], *, key: str | None = None, budget: float | None = None) -> T:
        budget = self.retry_seconds if budget is None else budget
        deadline = time.monotonic() + budget
        delay = FIRST_DELAY_SECONDS
        while True:
            try:
                with _translated(key):
                    return action()
            except _Transient as exc:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    # The cause (endpoint URL, bucket) goes to the log only; the message may reach a tenant.
                    logger.error("object store still unreachable after %.0f s: %s", budget, exc.cause)
                    message = f"the object store stayed unreachable for {budget:.0f} s"
                    raise StorageUnavailable(message) from exc.__cause__
                logger.warning("object store error, retrying in %.1f s: %s", delay, exc.cause)
                time.sleep(min(delay, remaining))
                delay = min(delay * 2, MAX_DELAY_SECONDS)


class _Transient(Exception):
    def __init__(self, cause: str) -> None:
        super().__init__(cause)
        self.cause = cause


@contextmanager
def _translated(key: str | None) -> Iterator[None]:
    """boto errors in this package's vocabulary (see the module docstring)."""
    try:
        yield
    except (ClientError, S3UploadFailedError) as raised:
        # upload_file wraps the ClientError it got (as the context) in an S3UploadFailedError.
        exc = raised if isinstance(raised, ClientError) else raised.__context__
        if not isinstance(exc, ClientError):
            raise
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
        if code in _MISSING or (status == 404 and key is not None):
            raise FileNotFoundError(f"no blob {key!r}") from None
        if code in _FULL or status == 507:
            raise StorageFull(f"the object store is out of space or over its quota ({code or status})") from exc
        if status in _TRANSIENT_STATUS:
            raise _Transient(f"{code or status}: {error.get('Message', '')}".strip()) from exc
        raise exc from None
    except (BotoConnectionError, HTTPClientError) as exc:
        raise _Transient(f"{type(exc).__name__}: {exc}") from exc
