"""The shared Celery configuration, sending by task name, and the broker check (real SQLite and Redis brokers)."""

from __future__ import annotations

import time
from datetime import datetime, timezone

import pytest
from job_rows import make_job
from kombu.exceptions import OperationalError

from service.db import make_engine, make_session_factory, transaction
from service.migrate import upgrade_head
from service.models import Job, JobStatus
from service.queue import (
    ADVANCE_TASK,
    CONTROL_QUEUE,
    QUEUE,
    TASK_NAME,
    celery_config,
    check_broker,
    enqueue_job,
    make_celery,
)
from service.repository import leases


def test_exactly_once_comes_from_the_database_not_the_broker(sqlite_settings):
    """The broker delivers a job id as often as it was sent; only one delivery wins the job's lease."""
    settings = sqlite_settings()
    upgrade_head(settings.sqlalchemy_url)
    engine = make_engine(settings.sqlalchemy_url)
    factory = make_session_factory(engine)
    job_id = make_job(factory)
    app = make_celery(settings)
    enqueue_job(app, job_id)
    enqueue_job(app, job_id)  # a resend, or an at-least-once redelivery
    delivered = []
    with app.connection_for_read() as connection, connection.SimpleQueue(QUEUE) as queue:
        for _ in range(2):
            message = queue.get(timeout=2)
            delivered.append(message.payload[0][0])
            message.ack()
    assert delivered == [job_id, job_id]
    now = datetime(2030, 1, 1, tzinfo=timezone.utc)
    claims = []
    for worker, delivered_id in enumerate(delivered):  # each delivery, as the worker's task would, claims
        with transaction(factory) as session:
            job = leases.claim_job(session, job_id=delivered_id, worker_id=f"w{worker}", lease_seconds=60, now=now)
            claims.append(None if job is None else job.worker_id)
    assert claims == ["w0", None]
    with factory() as session:
        row = session.get(Job, job_id)
        assert (row.status, row.worker_id, row.attempts) == (JobStatus.running, "w0", 1)
    engine.dispose()


def test_the_broker_is_configured_not_to_redeliver(sqlite_settings):
    config = celery_config(sqlite_settings())
    assert config["task_acks_late"] is False and config["task_reject_on_worker_lost"] is False
    assert config["worker_prefetch_multiplier"] == 1 and config["worker_max_tasks_per_child"] == 1
    assert config["task_ignore_result"] is True and config["result_backend"] is None
    assert config["broker_connection_retry_on_startup"] is True
    assert config["task_routes"] == {TASK_NAME: {"queue": QUEUE}, ADVANCE_TASK: {"queue": CONTROL_QUEUE}}


def test_embedded_broker_polls_fast_and_redis_keeps_messages_long(sqlite_settings):
    embedded = celery_config(sqlite_settings())
    assert embedded["broker_transport"] == "service.queue:SQLBrokerTransport"
    assert embedded["broker_url"].startswith("sqlite:///") and embedded["worker_enable_remote_control"] is False
    redis = celery_config(sqlite_settings(broker_url="redis://127.0.0.1:6379/3"))
    assert redis["broker_url"] == "redis://127.0.0.1:6379/3"
    assert redis["broker_transport_options"] == {"visibility_timeout": 12 * 3600}


def test_enqueue_sends_the_job_id_by_task_name_on_the_embedded_broker(sqlite_settings):
    app = make_celery(sqlite_settings())
    check_broker(app)
    enqueue_job(app, "a" * 32)
    with app.connection_for_read() as connection:
        assert connection.transport.polling_interval == pytest.approx(0.1)
        with connection.SimpleQueue(QUEUE) as queue:
            message = queue.get(timeout=2)
            assert message.headers["task"] == TASK_NAME and message.payload[0] == ["a" * 32]
            message.ack()
    with pytest.raises(ValueError, match="job_id"):
        enqueue_job(app, "")


def test_check_broker_and_enqueue_fail_fast_when_the_broker_is_down(sqlite_settings):
    app = make_celery(sqlite_settings(broker_url="redis://127.0.0.1:1/0"))
    started = time.monotonic()
    with pytest.raises(OperationalError):
        check_broker(app, timeout=1)
    with pytest.raises(OperationalError):
        enqueue_job(app, "b" * 32)
    assert time.monotonic() - started < 10


def test_check_broker_on_redis(redis_url, sqlite_settings):
    check_broker(make_celery(sqlite_settings(broker_url=redis_url)))
