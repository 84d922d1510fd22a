"""A job whose blob store fills up fails as ``storage_full`` with a readable message and leaves nothing behind.

``run_job`` in-process on SQLite, with the local blob store on a real tmpfs
that the test fills after the dataset is stored; the run's staging folder
sits on the ordinary disk and must be gone afterwards too.
"""

from __future__ import annotations

import numpy as np
from disk_support import fill_up
from job_rows import add_stored_dataset, add_tenant

from service.db import make_engine, make_session_factory, transaction
from service.ingest import DecodedDataset
from service.migrate import upgrade_head
from service.models import Job, JobStatus
from service.spec import JobSpec
from service.storage import make_blob_store
from workers.lifecycle.claim import run_job
from workers.lifecycle.failures import STORAGE_FULL

SPEC = {"model": {"arch": "simple_cnn"}, "epochs": 2, "batch_size": 16, "augment": {"rotation": 0, "scale": None}}


def _decoded() -> DecodedDataset:
    rng = np.random.default_rng(0)

    def split(n: int):
        labels = np.arange(n) % 2
        return rng.integers(0, 256, (n, 8, 8, 1), dtype=np.uint8), labels.astype(np.int64)

    return DecodedDataset(
        format="npz",
        class_names=["a", "b"],
        image_shape=(8, 8, 1),
        splits={s: split(16) for s in ("train", "val", "test")},
    )


def _job_on_a_stored_dataset(factory, store, settings) -> str:
    with transaction(factory) as session:
        tenant = add_tenant(session, name="acme")
        dataset = add_stored_dataset(
            session,
            _decoded(),
            tenant_id=tenant.id,
            name="tiny",
            imbalance_ratio=1.0,
            store=store,
            scratch=settings.scratch_path,
        )
        spec = JobSpec.model_validate({"dataset_id": dataset.id, **SPEC})
        job = Job(tenant_id=tenant.id, dataset_id=dataset.id, spec=spec.model_dump(mode="json"), epochs=spec.epochs)
        session.add(job)
        session.flush()
        return job.id


def test_a_full_blob_store_fails_the_job_as_storage_full(sqlite_settings, small_tmpfs):
    disk = small_tmpfs(1024 * 1024)
    settings = sqlite_settings(storage_url=f"file://{disk}", heartbeat_seconds=0.1, lease_seconds=5)
    upgrade_head(settings.sqlalchemy_url)
    engine = make_engine(settings.sqlalchemy_url)
    factory, store = make_session_factory(engine), make_blob_store(settings)
    job_id = _job_on_a_stored_dataset(factory, store, settings)
    fill_up(disk)

    assert run_job(job_id, settings=settings, worker_id="w1", session_factory=factory, store=store) == "failed"
    with factory() as session:
        job = session.get(Job, job_id)
    engine.dispose()
    assert (job.status, job.error_type) == (JobStatus.failed, STORAGE_FULL)
    assert job.error_message.startswith("the blob store's disk is out of disk space (ENOSPC)")
    assert "free space or raise the quota" in job.error_message and str(disk) not in job.error_message
    assert store.list("jobs") == [] and job.checkpoint_key is None  # no checkpoint, no artefact, no temp file
    assert [p for p in (disk / "jobs").rglob("*") if p.is_file()] == []
    assert list(settings.scratch_path.iterdir()) == []  # the run's staging folder is gone
