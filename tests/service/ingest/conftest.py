"""Fixtures for the ingestion tests: a fresh blob store and small, test-sized limits."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.ingest import IngestLimits
from service.storage import LocalBlobStore


@pytest.fixture
def store(tmp_path: Path) -> LocalBlobStore:
    return LocalBlobStore(tmp_path / "blobs")


@pytest.fixture
def limits() -> IngestLimits:
    return IngestLimits(max_archive_entries=1000, max_expanded_bytes=64 * 1024 * 1024, max_image_pixels=1_000_000)


@pytest.fixture
def files(tmp_path: Path) -> Path:
    """Where a test writes the uploads it builds (outside the store)."""
    path = tmp_path / "uploads"
    path.mkdir()
    return path
