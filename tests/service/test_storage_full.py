"""A full disk is a 507 naming the cause, never a 500, and leaves nothing behind (a real tmpfs that fills up)."""

from __future__ import annotations

import io
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from disk_support import free_bytes
from starlette.testclient import TestClient

from service.main import create_app

DISK_BYTES = 256 * 1024


def _npz(*, images: int, side: int = 28, seed: int = 0) -> bytes:
    """Random (incompressible) images in the MedMNIST layout; about ``images * side**2`` bytes."""
    rng = np.random.default_rng(seed)
    labels = np.arange(images) % 2
    buffer = io.BytesIO()
    np.savez(buffer, train_images=rng.integers(0, 256, (images, side, side), dtype=np.uint8), train_labels=labels)
    return buffer.getvalue()


@pytest.fixture
def client_with(sqlite_settings, _migrated_template: Path, bootstrap_headers) -> Iterator:
    """Factory: ``client_with(**settings)`` -> a TestClient of the real app, the bootstrap key in its headers."""
    clients: list[TestClient] = []

    def make(**overrides) -> TestClient:
        key = bootstrap_headers["Authorization"].removeprefix("Bearer ")
        settings = sqlite_settings(bootstrap_api_key=key, **overrides)
        shutil.copyfile(_migrated_template, settings.data_dir / "rarefit.db")
        client = TestClient(create_app(settings, run_reaper=False), raise_server_exceptions=False)
        client.__enter__()
        client.headers.update(bootstrap_headers)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def _upload(client: TestClient, body: bytes):
    return client.post("/v1/datasets", files={"file": ("scan.npz", body, "application/octet-stream")})


def test_blob_store_disk_full_answers_507_and_keeps_nothing(client_with, small_tmpfs):
    disk = small_tmpfs(DISK_BYTES)
    empty = free_bytes(disk)
    client = client_with(storage_url=f"file://{disk}")
    response = _upload(client, _npz(images=600))  # ~470 KB of arrays for a 256 KiB disk
    assert response.status_code == 507, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["error_type"] == "storage_full" and body["title"] == "Insufficient Storage"
    assert "the blob store's disk is out of disk space (ENOSPC)" in body["detail"]
    assert "nothing was stored" in body["detail"] and str(disk) not in body["detail"]
    assert _files(disk) == [] and free_bytes(disk) == empty
    assert client.get("/v1/datasets").json()["items"] == []
    scratch = client.app.state.settings.scratch_path
    assert _files(scratch) == []
    # The space came back whole, so a dataset that fits goes in.
    assert _upload(client, _npz(images=40)).status_code == 201


def test_staging_disk_full_answers_507_naming_it(client_with, small_tmpfs):
    disk = small_tmpfs(DISK_BYTES)
    client = client_with(scratch_dir=disk)
    response = _upload(client, _npz(images=600))
    assert response.status_code == 507, response.text
    assert "the API's staging disk is out of disk space (ENOSPC)" in response.json()["detail"]
    assert _files(disk) == [] and _files(client.app.state.settings.blob_dir) == []
