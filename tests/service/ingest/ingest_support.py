"""Helpers shared by the ingestion tests: run ``ingest_upload`` as the route would, inspect the store."""

from __future__ import annotations

import os
from pathlib import Path

import anyio
import pytest
from starlette.datastructures import UploadFile

from service.api.upload import IngestResult, ingest_upload
from service.ingest import DatasetRejected, IngestLimits
from service.storage import LocalBlobStore

MAX_UPLOAD = 64 * 1024 * 1024


def ingest(
    path: Path,
    *,
    store: LocalBlobStore,
    limits: IngestLimits,
    filename: str | None = None,
    dataset_id: str = "ds1",
    max_upload_bytes: int = MAX_UPLOAD,
) -> IngestResult:
    """``ingest_upload`` on the file at ``path``, sent as ``filename`` (default: its name), staged in
    ``scratch_of(store)``."""

    async def main() -> IngestResult:
        with open(path, "rb") as handle:
            upload = UploadFile(file=handle, filename=filename or path.name)
            return await ingest_upload(
                upload,
                store=store,
                dataset_id=dataset_id,
                limits=limits,
                max_upload_bytes=max_upload_bytes,
                scratch=scratch_of(store),
            )

    return anyio.run(main)


def rejected(path: Path, *, store: LocalBlobStore, limits: IngestLimits, **kwargs) -> DatasetRejected:
    """The ``DatasetRejected`` that ingesting ``path`` raises; asserts neither the store nor the staging
    folder holds a file after."""
    with pytest.raises(DatasetRejected) as info:
        ingest(path, store=store, limits=limits, **kwargs)
    assert leftover_files(store.root) == [] and leftover_files(scratch_of(store)) == []
    return info.value


def scratch_of(store: LocalBlobStore) -> Path:
    """The staging folder the tests give ``ingest_upload``: beside the store, as in a data dir."""
    return store.root.parent / "scratch"


def leftover_files(root: Path) -> list[str]:
    """Every non-directory under ``root`` (empty folders are allowed to stay)."""
    found = []
    for folder, _, files in os.walk(root):
        found += [os.path.relpath(os.path.join(folder, name), root) for name in files]
    return sorted(found)
