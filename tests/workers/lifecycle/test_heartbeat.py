"""The lease heartbeat on a real SQLite database: renews, relays cancel, notices a lost lease or an outage."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
from job_rows import make_job

from service.db import aware, make_engine, make_session_factory, transaction
from service.migrate import upgrade_head
from service.models import Job, utcnow
from service.repository import leases
from workers.lifecycle.heartbeat import Heartbeat


@pytest.fixture
def factory(tmp_path):
    url = f"sqlite:///{tmp_path / 'rarefit.db'}"
    upgrade_head(url)
    engine = make_engine(url)
    yield make_session_factory(engine)
    engine.dispose()


def _running_job(factory, *, worker: str = "w1", lease_seconds: float = 5) -> str:
    job_id = make_job(factory)
    with transaction(factory) as session:
        assert leases.claim_job(session, job_id=job_id, worker_id=worker, lease_seconds=lease_seconds, now=utcnow())
    return job_id


def _heartbeat(factory, job_id: str, *, worker: str = "w1", lease: float = 60, interval: float = 10) -> Heartbeat:
    return Heartbeat(
        session_factory=factory, job_id=job_id, worker_id=worker, lease_seconds=lease, interval_seconds=interval
    )


def _lease_expires_at(factory, job_id: str):
    with factory() as session:
        return aware(session.get(Job, job_id).lease_expires_at)


def test_a_beat_extends_the_lease_by_its_length(factory):
    job_id = _running_job(factory, lease_seconds=5)
    before = utcnow()
    _heartbeat(factory, job_id, lease=600).beat()
    after = utcnow()
    assert before + timedelta(seconds=600) <= _lease_expires_at(factory, job_id) <= after + timedelta(seconds=600)


def test_a_cancel_request_is_relayed(factory):
    job_id = _running_job(factory)
    heartbeat = _heartbeat(factory, job_id)
    heartbeat.beat()
    assert not heartbeat.cancel_requested.is_set()
    with transaction(factory) as session:
        session.get(Job, job_id).cancel_requested = True
    heartbeat.beat()
    assert heartbeat.cancel_requested.is_set() and not heartbeat.lease_lost.is_set()


def test_a_job_another_worker_holds_is_a_lost_lease(factory):
    job_id = _running_job(factory, worker="w1")
    heartbeat = _heartbeat(factory, job_id, worker="w2")
    heartbeat.beat()
    assert heartbeat.lease_lost.is_set()


def test_an_unreachable_database_loses_the_lease_only_after_a_whole_lease(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'missing' / 'rarefit.db'}")  # no such folder: every beat fails
    heartbeat = _heartbeat(make_session_factory(engine), "0" * 32, lease=0.2, interval=0.1)
    try:
        heartbeat.beat()  # just started: a failed renewal is logged, the lease still counts
        assert not heartbeat.lease_lost.is_set()
        time.sleep(0.25)  # a whole lease without a renewal
        heartbeat.beat()
        assert heartbeat.lease_lost.is_set()
    finally:
        engine.dispose()


def test_the_thread_beats_at_once_and_stops_when_asked(factory):
    job_id = _running_job(factory)
    with transaction(factory) as session:
        session.get(Job, job_id).cancel_requested = True  # requested while the job was being claimed
    heartbeat = _heartbeat(factory, job_id, interval=30)
    heartbeat.start()
    try:
        assert heartbeat.cancel_requested.wait(timeout=10)
    finally:
        heartbeat.stop()
    assert f"heartbeat-{job_id}" not in {thread.name for thread in threading.enumerate()}


@pytest.mark.parametrize(("lease", "interval"), [(10, 0), (10, -1), (5, 5), (5, 6)])
def test_the_interval_must_be_positive_and_shorter_than_the_lease(factory, lease, interval):
    with pytest.raises(ValueError, match="need 0 < interval_seconds < lease_seconds"):
        _heartbeat(factory, "0" * 32, lease=lease, interval=interval)
