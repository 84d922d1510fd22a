"""Fixtures for the HTTP API: a migrated SQLite database, the real app, real keys.

Names carry an ``api_`` prefix so they never shadow the fixtures other test
modules in this folder define for themselves (``settings``, ``factory``, …).
"""

from __future__ import annotations

import shutil
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI

with warnings.catch_warnings():
    # Starlette 1.10 asks for the `httpx2` package and warns when it falls back to
    # `httpx`, which is what constraints.txt pins; the fallback works the same.
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    from starlette.testclient import TestClient
from job_rows import add_model
from sqlalchemy.orm import Session, sessionmaker
from tenant_keys import tenant_id_of

from service.config import Settings
from service.db import transaction
from service.migrate import upgrade_head
from service.models import Artifact, EpochMetrics, Job, JobStatus, new_id
from service.repository import datasets, tenants

BOOTSTRAP_KEY = "rf_test-bootstrap-key-0123456789abcdef"


@pytest.fixture(scope="session")
def _migrated_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One migrated SQLite file per session; each test gets a copy (faster than migrating)."""
    path = tmp_path_factory.mktemp("template") / "rarefit.db"
    upgrade_head(f"sqlite:///{path}")
    return path


@pytest.fixture
def api_settings(sqlite_settings: Callable[..., Settings], _migrated_template: Path) -> Settings:
    settings = sqlite_settings(bootstrap_api_key=BOOTSTRAP_KEY, max_concurrent_jobs_per_tenant=3, max_epochs=50)
    shutil.copyfile(_migrated_template, settings.data_dir / "rarefit.db")
    return settings


@pytest.fixture
def api_app(api_settings: Settings) -> FastAPI:
    from service.main import create_app  # imported here so this conftest loads even without it

    return create_app(api_settings, run_reaper=False)


@pytest.fixture
def api_client(api_app: FastAPI) -> Iterator[TestClient]:
    with TestClient(api_app, raise_server_exceptions=False) as client:
        yield client


@pytest.fixture
def api_db(api_client: TestClient) -> sessionmaker[Session]:
    """The running app's own session factory (same database the requests see)."""
    return api_client.app.state.session_factory


def make_key(factory: sessionmaker[Session], tenant: str) -> str:
    with transaction(factory) as session:
        row = tenants.get_or_create_tenant(session, name=tenant)
        return tenants.create_api_key(session, tenant_id=row.id)[1]


@pytest.fixture
def alpha(api_db: sessionmaker[Session]) -> dict[str, str]:
    """Authorization header of tenant 'alpha'."""
    return {"Authorization": f"Bearer {make_key(api_db, 'alpha')}"}


@pytest.fixture
def beta(api_db: sessionmaker[Session]) -> dict[str, str]:
    """Authorization header of tenant 'beta'."""
    return {"Authorization": f"Bearer {make_key(api_db, 'beta')}"}


def _add_dataset_row(factory: sessionmaker[Session], headers: dict[str, str], *, num_classes: int = 2) -> str:
    counts = list(range(10, 10 * (num_classes + 1), 10))
    summary = {
        "num_classes": num_classes,
        "class_names": [f"c{i}" for i in range(num_classes)],
        "image_shape": [8, 8, 1],
        "pixel_bits": 8,
        "splits": {name: {"count": sum(counts), "class_counts": counts} for name in ("train", "val", "test")},
        "imbalance_ratio": counts[-1] / counts[0],
    }
    dataset_id = new_id()
    with transaction(factory) as session:
        datasets.add_dataset(
            session,
            tenant_id=tenant_id_of(factory, headers),
            dataset_id=dataset_id,
            name="toy",
            format="npz",
            summary=summary,
            blob_prefix=f"datasets/{dataset_id}",
            size_bytes=123,
        )
    return dataset_id


def _finish_job(factory: sessionmaker[Session], job_id: str, *, store, with_model: bool = True) -> str | None:
    with transaction(factory) as session:
        job = session.get(Job, job_id)
        job.status, job.progress_epoch, job.best_epoch = JobStatus.succeeded, 2, 2
        job.test_metrics = {"accuracy": 0.9}
        for epoch in (2, 1):
            session.add(
                EpochMetrics(
                    job_id=job_id,
                    epoch=epoch,
                    train_loss=1.0 / epoch,
                    val_loss=0.5,
                    lr=1e-3,
                    seconds=0.1,
                    val={"accuracy": 0.8 + epoch / 100},
                )
            )
        key = f"jobs/{job_id}/artifacts/metrics.json"
        info = store.write(key, b'{"ok": true}')
        session.add(
            Artifact(
                job_id=job_id,
                name="metrics.json",
                blob_key=key,
                size=info.size,
                content_type="application/json",
                sha256=info.sha256,
            )
        )
        if not with_model:
            return None
        return add_model(
            session,
            job,
            arch="simple_cnn",
            class_names=["c0", "c1"],
            input_shape=[8, 8, 1],
            blob_prefix=f"jobs/{job_id}/artifacts",
            threshold=0.4,
            positive_class=0,
            metrics={"accuracy": 0.9},
        )


@pytest.fixture
def new_dataset(api_db: sessionmaker[Session]) -> Callable[..., str]:
    """``new_dataset(headers, num_classes=2)``: a dataset row as ingest records it.

    No blobs: job submission and the job endpoints never read them.
    """
    return lambda headers, num_classes=2: _add_dataset_row(api_db, headers, num_classes=num_classes)


@pytest.fixture
def complete_job(api_client: TestClient, api_db: sessionmaker[Session]) -> Callable[..., str | None]:
    """``complete_job(job_id, with_model=True)``: the worker's part of a succeeded job
    (two epochs of metrics, a stored ``metrics.json`` artefact, a model row); returns the model id."""
    store = api_client.app.state.blob_store
    return lambda job_id, with_model=True: _finish_job(api_db, job_id, store=store, with_model=with_model)


@pytest.fixture
def bootstrap_headers() -> dict[str, str]:
    return {"Authorization": f"Bearer {BOOTSTRAP_KEY}"}
