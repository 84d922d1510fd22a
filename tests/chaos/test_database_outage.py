"""The worker loses PostgreSQL (every connection cut, new ones refused) in the middle of training.

The worker reaches the database through a TCP proxy the test can cut; the API
and its reaper reach it directly (the outage is between the worker and the
database). The design (``workers/lifecycle/dbretry.py``, ``workers/lifecycle/heartbeat.py``):

- shorter than the lease, minus a heartbeat: writes are retried with backoff,
  the lease is renewed after the outage, the job goes on as if nothing happened;
- longer than the lease: the worker stops writing (it may no longer own the
  job), the reaper re-queues the expired lease, and once the database is back
  a worker claims the job again, resumes from the last recorded checkpoint
  and finishes it. Nothing is half-written either way.
"""

from __future__ import annotations

import time

import pytest
from chaos_support import wait_for

from service.models import JobStatus

pytestmark = [pytest.mark.chaos, pytest.mark.integration, pytest.mark.timeout(240)]
SMALL = (240, 60)  # short epochs: a two-second outage spans several epoch ends
STOPPED = ("no lease renewal for a whole lease", "lease lost", "leaving it to the reaper")


def test_brief_database_outage_is_ridden_out_by_retries(cluster, pg_proxy):
    world = cluster(lease_seconds=6)
    world.start_redis()
    world.start_api(wait=False)
    worker = world.start_worker(database_url=world.through(pg_proxy))
    world.wait_api()
    job = world.submit(world.upload(train=SMALL), epochs=10)
    world.wait_row(job, lambda row: row.progress_epoch >= 2, what="two epochs", timeout=60)

    pg_proxy.cut()
    time.sleep(2.0)  # the outage itself: shorter than lease (6 s) minus heartbeat (1 s)
    pg_proxy.restore()

    world.wait_final(job, timeout=90)
    row = world.assert_trained_once(job, epochs=10)
    assert row.attempts == 1, "the lease never expired, so the job was never handed on"
    assert pg_proxy.aborted > 0
    log = worker.log()
    assert "lease renewal failed" in log and "database error while trying to" in log


def test_database_outage_longer_than_the_lease_is_recovered_by_the_reaper(cluster, pg_proxy):
    world = cluster(requeue_after_seconds=3)
    world.start_redis()
    world.start_api(wait=False)
    worker = world.start_worker(database_url=world.through(pg_proxy))
    world.wait_api()
    job = world.submit(world.upload(train=SMALL), epochs=12)
    world.wait_row(job, lambda row: row.progress_epoch >= 2, what="two epochs", timeout=60)

    pg_proxy.cut()
    requeued = world.wait_row(
        job, lambda row: row.status == JobStatus.queued, what="the reaper to re-queue it", timeout=30
    )
    wait_for(
        lambda: any(text in worker.log() for text in STOPPED),
        timeout=30,
        what="the first attempt to stop writing",
        logs=world.logs,
    )
    assert world.model_count(job) == 0
    pg_proxy.restore()

    world.wait_final(job, timeout=120)
    row = world.assert_trained_once(job, epochs=12)
    assert row.attempts == 2 and row.error_type is None
    # Only the epoch in flight is lost: the checkpoint the row pointed at survived the outage.
    assert f"resuming after epoch {requeued.checkpoint_epoch}" in worker.log()
    assert world.job(job)["status"] == "succeeded"
