"""Redis dies (SIGKILL) and comes back empty while one job runs and others wait: nothing is lost.

The running job never needed the broker (early ack: its message was gone when
it started; the lease lives in PostgreSQL). The queued jobs' messages die
with Redis, and a job submitted during the outage was never sent; the API's
reaper re-sends every job left ``queued`` longer than
``requeue_after_seconds``, and the worker reconnects by itself.
"""

from __future__ import annotations

import time

import pytest
from chaos_support import wait_for

from service.config import Settings
from service.models import JobStatus
from service.queue import celery_config

pytestmark = [pytest.mark.chaos, pytest.mark.integration, pytest.mark.timeout(240)]
EPOCHS = 6


def test_redis_restart_loses_no_job_and_trains_each_once(cluster):
    world = cluster(requeue_after_seconds=3)
    world.start_redis()
    world.start_api(wait=False)
    worker = world.start_worker()
    world.wait_api()
    dataset = world.upload()
    jobs = [world.submit(dataset, epochs=EPOCHS, seed=seed) for seed in range(3)]
    world.wait_row(
        jobs[0],
        lambda row: row.status == JobStatus.running and row.progress_epoch >= 1,
        what="training under way",
        timeout=60,
    )
    assert [world.row(job).status for job in jobs[1:]] == [JobStatus.queued] * 2

    at_kill = world.row(jobs[0])
    world.redis.kill()  # no goodbye; with --save "" it keeps nothing, like a restarted container
    wait_for(
        lambda: "could not send job" in world.api.log(),
        timeout=30,
        what="the reaper to hit the dead broker",
        logs=world.logs,
    )
    world.wait_row(
        jobs[0],
        lambda row: row.progress_epoch > at_kill.progress_epoch,
        what="training to go on without the broker",
        timeout=60,
    )
    started = time.monotonic()
    jobs.append(world.submit(dataset, epochs=EPOCHS, seed=3))  # accepted while the broker is down
    assert time.monotonic() - started < 10, "a dead broker must not hang a submission"
    assert world.row(jobs[-1]).status == JobStatus.queued and f"could not enqueue job {jobs[-1]}" in world.api.log()
    assert world.redis.process.returncode is not None and not world.redis_answers()
    world.start_redis()  # same port, empty: the queued jobs' messages are gone

    for job in jobs:
        world.wait_final(job, timeout=150)
    for job in jobs:
        row = world.assert_trained_once(job, epochs=EPOCHS)
        assert row.attempts == 1, f"job {job} was claimed {row.attempts} times"
    assert worker.alive and len(world.workers) == 1, "the same worker process reconnected by itself"
    assert "Connection to broker lost" in worker.log()
    assert all(world.job(job)["status"] == "succeeded" for job in jobs)


def test_workers_retry_the_broker_forever_and_never_redeliver_a_started_job(tmp_path):
    config = celery_config(Settings(_env_file=None, data_dir=tmp_path, broker_url="redis://127.0.0.1:1/0"))
    assert config["broker_connection_max_retries"] is None  # Celery's default gives up after 100 tries
    assert config["task_acks_late"] is False and config["task_reject_on_worker_lost"] is False
    assert config["broker_transport_options"]["visibility_timeout"] == 12 * 3600
