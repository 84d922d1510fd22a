"""The reaper against a real SQLite database and the real embedded (SQLite) broker."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from job_rows import make_job

from service.db import aware, make_engine, make_session_factory, transaction
from service.migrate import upgrade_head
from service.models import Job, JobStatus, utcnow
from service.queue import TASK_NAME, make_celery
from service.reaper import ReaperThread, reap_once
from service.repository import leases


@pytest.fixture
def settings(sqlite_settings):
    return sqlite_settings(max_attempts=2, requeue_after_seconds=300, reaper_interval_seconds=0.05)


@pytest.fixture
def factory(settings):
    upgrade_head(settings.sqlalchemy_url)
    engine = make_engine(settings.sqlalchemy_url)
    yield make_session_factory(engine)
    engine.dispose()


@pytest.fixture
def celery_app(settings):
    return make_celery(settings)


def running_job(factory, *, lease_seconds: float, now) -> str:
    job_id = make_job(factory, enqueued_at=now)
    with transaction(factory) as session:
        assert leases.claim_job(session, job_id=job_id, worker_id="dead", lease_seconds=lease_seconds, now=now)
    return job_id


def sent_job_ids(celery_app) -> list[str]:
    """Drain the train queue; the job ids of the rarefit.train_job messages in it."""
    ids = []
    with celery_app.connection_for_read() as connection, connection.SimpleQueue("train") as queue:
        while True:
            try:
                message = queue.get(timeout=0.3)
            except queue.Empty:
                return ids
            assert message.headers["task"] == TASK_NAME
            ids.append(message.payload[0][0])
            message.ack()


def get(factory, job_id: str) -> Job:
    with factory() as session:
        return session.get(Job, job_id)


def test_expired_lease_is_requeued_and_resent_then_fails_after_max_attempts(settings, factory, celery_app):
    now = utcnow()
    job_id = running_job(factory, lease_seconds=10, now=now)
    assert reap_once(settings, session_factory=factory, celery_app=celery_app, now=now).is_empty
    report = reap_once(settings, session_factory=factory, celery_app=celery_app, now=now + timedelta(seconds=11))
    assert report.requeued == [job_id] and report.resent == []
    assert sent_job_ids(celery_app) == [job_id]
    assert (get(factory, job_id).status, get(factory, job_id).worker_id) == (JobStatus.queued, None)

    later = now + timedelta(minutes=1)
    with transaction(factory) as session:
        leases.claim_job(session, job_id=job_id, worker_id="dead-again", lease_seconds=10, now=later)
    report = reap_once(settings, session_factory=factory, celery_app=celery_app, now=later + timedelta(seconds=11))
    assert report.failed == [job_id] and sent_job_ids(celery_app) == []
    row = get(factory, job_id)
    assert (row.status, row.error_type, row.attempts) == (JobStatus.failed, "WorkerLost", 2)


def test_stale_queued_job_is_resent_once_per_interval(settings, factory, celery_app):
    now = utcnow()
    stale = make_job(factory, enqueued_at=now - timedelta(seconds=301))
    never_stamped = make_job(factory, created_at=now - timedelta(seconds=301))
    fresh = make_job(factory, enqueued_at=now - timedelta(seconds=10))
    report = reap_once(settings, session_factory=factory, celery_app=celery_app, now=now)
    assert sorted(report.resent) == sorted([stale, never_stamped])
    assert sorted(sent_job_ids(celery_app)) == sorted([stale, never_stamped])
    assert aware(get(factory, stale).enqueued_at) == now
    # Just re-sent: nothing more until requeue_after_seconds have passed again.
    assert reap_once(settings, session_factory=factory, celery_app=celery_app, now=now + timedelta(seconds=5)).is_empty
    assert get(factory, fresh).status == JobStatus.queued


def test_broker_down_keeps_the_job_queued_for_the_next_pass(sqlite_settings, factory):
    settings = sqlite_settings(broker_url="redis://127.0.0.1:1/0", requeue_after_seconds=300)
    now = utcnow()
    job_id = make_job(factory, enqueued_at=now - timedelta(hours=1))
    report = reap_once(settings, session_factory=factory, celery_app=make_celery(settings), now=now)
    assert report.send_errors == [job_id] and report.resent == []
    assert aware(get(factory, job_id).enqueued_at) == now - timedelta(hours=1)


def test_reaper_thread_survives_a_missing_database_and_then_recovers_jobs(settings, celery_app):
    engine = make_engine(settings.sqlalchemy_url)
    factory = make_session_factory(engine)
    thread = ReaperThread(settings, factory, celery_app)
    thread.start()
    try:
        time.sleep(0.3)  # several passes fail: the tables do not exist yet
        assert thread.is_alive
        upgrade_head(settings.sqlalchemy_url)
        job_id = running_job(factory, lease_seconds=0.01, now=utcnow() - timedelta(seconds=1))
        deadline = time.monotonic() + 10
        while get(factory, job_id).status != JobStatus.queued and time.monotonic() < deadline:
            time.sleep(0.05)
        assert get(factory, job_id).status == JobStatus.queued
    finally:
        thread.stop()
        engine.dispose()
    assert not thread.is_alive
    assert sent_job_ids(celery_app) == [job_id]
