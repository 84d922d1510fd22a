"""Worker-side job transitions on SQLite and on real PostgreSQL: exclusive, idempotent, recoverable."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone

import pytest
from job_rows import make_job
from sqlalchemy import func, select

from service.db import aware, make_engine, make_session_factory, transaction
from service.migrate import upgrade_head
from service.models import Artifact, EpochMetrics, Job, JobStatus, Model
from service.repository import leases, models

NOW = datetime(2030, 1, 1, 12, 0, tzinfo=timezone.utc)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def factory(request, tmp_path_factory):
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('leases') / 'rarefit.db'}"
    else:
        url = request.getfixturevalue("new_postgres_url")()
    upgrade_head(url)
    engine = make_engine(url)
    yield make_session_factory(engine)
    engine.dispose()


def get(factory, job_id: str) -> Job:
    with factory() as session:
        return session.get(Job, job_id)


def claim(factory, job_id: str, worker: str = "w1", now: datetime = NOW, lease: float = 60):
    with transaction(factory) as session:
        return leases.claim_job(session, job_id=job_id, worker_id=worker, lease_seconds=lease, now=now)


def test_claim_sets_running_lease_and_counts_the_attempt(factory):
    job_id = make_job(factory)
    job = claim(factory, job_id)
    assert job is not None and job.status == JobStatus.running
    row = get(factory, job_id)
    assert (row.status, row.worker_id, row.attempts) == (JobStatus.running, "w1", 1)
    assert aware(row.lease_expires_at) == NOW + timedelta(seconds=60)
    assert aware(row.started_at) == NOW
    # A duplicate delivery while running changes nothing.
    assert claim(factory, job_id, worker="w2") is None
    assert (get(factory, job_id).worker_id, get(factory, job_id).attempts) == ("w1", 1)


def _race_to_claim(factory, job_id, *, name: str, barrier: threading.Barrier, winners: list[str]) -> None:
    barrier.wait()
    if claim(factory, job_id, worker=name) is not None:
        winners.append(name)


def test_claim_is_exclusive_under_a_race(factory):
    for _ in range(3):
        job_id = make_job(factory)
        barrier, winners = threading.Barrier(4), []
        threads = [
            threading.Thread(
                target=_race_to_claim,
                args=(factory, job_id),
                kwargs={"name": f"w{i}", "barrier": barrier, "winners": winners},
            )
            for i in range(4)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(winners) == 1
        row = get(factory, job_id)
        assert (row.worker_id, row.attempts) == (winners[0], 1)


def test_renew_only_by_the_holder_and_reports_cancel(factory):
    job_id = make_job(factory)
    claim(factory, job_id)
    later = NOW + timedelta(seconds=30)
    with transaction(factory) as session:
        wrong = leases.renew_lease(session, job_id=job_id, worker_id="w2", lease_seconds=60, now=later)
    assert wrong == leases.LeaseStatus(held=False, cancel_requested=False)
    assert aware(get(factory, job_id).lease_expires_at) == NOW + timedelta(seconds=60)
    with transaction(factory) as session:
        session.get(Job, job_id).cancel_requested = True
    with transaction(factory) as session:
        status = leases.renew_lease(session, job_id=job_id, worker_id="w1", lease_seconds=60, now=later)
    assert status == leases.LeaseStatus(held=True, cancel_requested=True)
    assert aware(get(factory, job_id).lease_expires_at) == later + timedelta(seconds=60)


def test_record_epoch_upserts_once_per_epoch_and_needs_the_lease(factory):
    job_id = make_job(factory)
    claim(factory, job_id)
    first = {"epoch": 1, "train_loss": 0.9, "val_loss": 0.8, "lr": 0.1, "seconds": 1.0, "val": {"auroc": float("nan")}}
    second = {**first, "train_loss": 0.5, "val": {"auroc": 0.75}}
    with transaction(factory) as session:
        assert leases.record_epoch(session, job_id=job_id, worker_id="w1", record=first)
    with transaction(factory) as session:
        assert leases.record_epoch(session, job_id=job_id, worker_id="w1", record=second)
    with transaction(factory) as session:
        assert not leases.record_epoch(session, job_id=job_id, worker_id="w2", record={**first, "epoch": 2})
    with factory() as session:
        rows = session.scalars(select(EpochMetrics).where(EpochMetrics.job_id == job_id)).all()
    assert [(r.epoch, r.train_loss, r.val) for r in rows] == [(1, 0.5, {"auroc": 0.75})]
    assert get(factory, job_id).progress_epoch == 1


def test_checkpoint_and_finish_only_by_the_holder(factory):
    job_id = make_job(factory)
    claim(factory, job_id)
    with transaction(factory) as session:
        assert not leases.record_checkpoint(session, job_id=job_id, worker_id="w2", key="k", sha256="0" * 64, epoch=1)
        assert leases.record_checkpoint(session, job_id=job_id, worker_id="w1", key="k", sha256="a" * 64, epoch=1)
        assert not leases.finish_job(session, job_id=job_id, worker_id="w2", status=JobStatus.succeeded)
        assert leases.finish_job(
            session,
            job_id=job_id,
            worker_id="w1",
            status=JobStatus.succeeded,
            best_epoch=1,
            test_metrics={"accuracy": 0.5},
            now=NOW,
        )
    row = get(factory, job_id)
    assert (row.status, row.checkpoint_key, row.checkpoint_epoch, row.best_epoch) == (JobStatus.succeeded, "k", 1, 1)
    assert row.test_metrics == {"accuracy": 0.5} and row.lease_expires_at is None
    with transaction(factory) as session, pytest.raises(ValueError, match="final status"):
        leases.finish_job(session, job_id=job_id, worker_id="w1", status=JobStatus.running)


def test_register_model_and_artifacts_are_idempotent(factory):
    job_id = make_job(factory)
    tenant_id = get(factory, job_id).tenant_id
    kwargs = dict(
        job_id=job_id,
        tenant_id=tenant_id,
        arch="simple_cnn",
        class_names=["a", "b"],
        input_shape=[8, 8, 1],
        threshold=0.4,
        positive_class=0,
        metrics={"accuracy": 0.9},
        blob_prefix=f"jobs/{job_id}/artifacts",
    )
    with transaction(factory) as session:
        first = models.register_model(session, **kwargs)
    with transaction(factory) as session:
        second = models.register_model(session, **{**kwargs, "arch": "resnet18"})
    assert second.id == first.id and second.arch == "simple_cnn"
    for size in (10, 20):
        with transaction(factory) as session:
            leases.register_artifact(
                session,
                job_id=job_id,
                name="weights.safetensors",
                blob_key="k",
                size=size,
                content_type="application/octet-stream",
                sha256="b" * 64,
            )
    with factory() as session:
        assert session.scalar(select(func.count()).select_from(Model).where(Model.job_id == job_id)) == 1
        artifacts = session.scalars(select(Artifact).where(Artifact.job_id == job_id)).all()
    assert [(a.name, a.size) for a in artifacts] == [("weights.safetensors", 20)]


def test_release_requeues_without_counting_the_attempt(factory):
    job_id = make_job(factory)
    claim(factory, job_id)
    with transaction(factory) as session:
        assert not leases.release_job(session, job_id=job_id, worker_id="w2")
        assert leases.release_job(session, job_id=job_id, worker_id="w1", now=NOW)
    row = get(factory, job_id)
    assert (row.status, row.worker_id, row.attempts, row.lease_expires_at) == (JobStatus.queued, None, 0, None)
    assert claim(factory, job_id, worker="w2") is not None


def test_expired_lease_requeues_then_fails_after_max_attempts(factory):
    job_id = make_job(factory)
    for attempt in (1, 2):
        start = NOW + timedelta(hours=attempt)
        claim(factory, job_id, now=start, lease=60)
        with transaction(factory) as session:
            assert job_id not in leases.expired_running_jobs(session, now=start + timedelta(seconds=59))
            assert (
                leases.requeue_expired(session, job_id=job_id, now=start + timedelta(seconds=59), max_attempts=2)
                is None
            )
            expired = start + timedelta(seconds=61)
            assert job_id in leases.expired_running_jobs(session, now=expired)
            outcome = leases.requeue_expired(session, job_id=job_id, now=expired, max_attempts=2)
        assert outcome == ("requeued" if attempt == 1 else "failed")
    row = get(factory, job_id)
    assert (row.status, row.attempts, row.error_type) == (JobStatus.failed, 2, "WorkerLost")
    assert "stopped responding 2 time(s)" in row.error_message


def test_expired_lease_with_cancel_request_is_cancelled(factory):
    job_id = make_job(factory)
    claim(factory, job_id)
    with transaction(factory) as session:
        session.get(Job, job_id).cancel_requested = True
    with transaction(factory) as session:
        outcome = leases.requeue_expired(session, job_id=job_id, now=NOW + timedelta(hours=1), max_attempts=3)
    assert outcome == "cancelled" and get(factory, job_id).status == JobStatus.cancelled


def test_stale_queued_jobs_by_enqueue_time_or_creation(factory):
    old = NOW - timedelta(hours=1)
    stale_sent = make_job(factory, enqueued_at=old)
    never_sent = make_job(factory, created_at=old)
    fresh = make_job(factory, created_at=old, enqueued_at=NOW)
    with factory() as session:
        stale = leases.stale_queued_jobs(session, now=NOW, older_than_seconds=300, limit=10_000)
    assert stale_sent in stale and never_sent in stale and fresh not in stale
