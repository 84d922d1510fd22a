"""Processes die mid-job: the API (SIGKILL), the worker (SIGTERM, as ``docker stop``), the worker under ``serve``.

The database is the truth, so the API holds nothing a job needs; a worker
that is told to stop hands its job back with its checkpoint; a worker that is
killed outright leaves a lease that expires, and the reaper re-queues the job
for the next worker, which resumes from the last recorded checkpoint.
"""

from __future__ import annotations

import os
import signal

import httpx
import pytest
from chaos_support import parent_pid, wait_for

from service.models import JobStatus

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(240)]


def _running_with_checkpoint(after: int = 0):
    return lambda row: row.status == JobStatus.running and row.checkpoint_epoch > after


@pytest.mark.integration
def test_api_killed_and_restarted_mid_job_leaves_the_job_untouched(cluster):
    world = cluster()
    world.start_redis()
    world.start_api(wait=False)
    world.start_worker()
    world.wait_api()
    job = world.submit(world.upload(), epochs=8)
    seen = world.wait_row(
        job, lambda row: row.status == JobStatus.running and row.progress_epoch >= 1, what="training under way"
    )

    world.api.kill()
    with pytest.raises(httpx.TransportError):
        world.http.get(f"/v1/jobs/{job}")
    world.wait_row(job, lambda row: row.progress_epoch > seen.progress_epoch, what="training to go on without the API")
    world.start_api()  # same port, same database

    polled = wait_for(
        lambda: (body := world.job(job))["status"] == "succeeded" and body,
        timeout=90,
        what="the job to succeed, polled over HTTP",
        logs=world.logs,
    )
    row = world.assert_trained_once(job, epochs=8)
    assert row.attempts == 1 and polled["model_id"] == row.model_id
    history = world.http.get(f"/v1/jobs/{job}/metrics").json()["history"]
    assert [record["epoch"] for record in history] == list(range(1, 9))


@pytest.mark.integration
def test_sigterm_to_rarefit_worker_hands_the_job_back_and_the_next_worker_resumes_it(cluster):
    world = cluster()
    world.start_redis()
    world.start_api(wait=False)
    first = world.start_worker()
    world.wait_api()
    job = world.submit(world.upload(), epochs=8)
    world.wait_row(job, _running_with_checkpoint(), what="the first checkpoint")

    first.process.send_signal(signal.SIGTERM)  # the parent only, as `docker stop` does: it must tell the child
    assert first.process.wait(timeout=60) == 0
    released = world.row(job)
    assert (released.status, released.attempts, released.worker_id) == (JobStatus.queued, 0, None)
    assert released.checkpoint_epoch >= 1 and world.store.exists(released.checkpoint_key)
    assert "handed back to the queue" in first.log()

    second = world.start_worker()  # the re-sent message waits in Redis
    world.wait_final(job, timeout=90)
    row = world.assert_trained_once(job, epochs=8)
    assert row.attempts == 1, "a hand-back is not a failed attempt"
    assert f"resuming after epoch {released.checkpoint_epoch}" in second.log()


def test_serve_recovers_a_job_whose_embedded_worker_was_killed_twice(cluster):
    """First the OOM killer's way (the training process only), then the whole worker (serve restarts it)."""
    world = cluster(embedded=True)  # `rarefit serve` defaults: SQLite database and broker, one machine
    serve = world.start_serve()
    job = world.submit(world.upload(), epochs=12)

    first = world.wait_row(job, _running_with_checkpoint(), what="the first checkpoint")
    os.kill(int(first.worker_id.rsplit(":", 1)[1]), signal.SIGKILL)  # the pool child; Celery's parent survives
    killed = world.row(job)
    resumed = _running_with_checkpoint(killed.checkpoint_epoch)
    second = world.wait_row(
        job, lambda row: row.attempts == 2 and resumed(row), what="a new pool process to resume it", timeout=60
    )

    child = int(second.worker_id.rsplit(":", 1)[1])
    worker_group = os.getpgid(child)
    assert worker_group != os.getpgid(serve.pid) and parent_pid(parent_pid(child)) == serve.pid
    os.killpg(worker_group, signal.SIGKILL)  # the whole worker: only serve's supervision brings one back
    killed_again = world.row(job)

    world.wait_final(job, timeout=120)
    row = world.assert_trained_once(job, epochs=12)
    assert row.attempts == 3
    log = serve.log()
    assert "worker exited with code" in log and "worker started" in log
    for point in (killed, killed_again):
        assert f"resuming after epoch {point.checkpoint_epoch}" in log
