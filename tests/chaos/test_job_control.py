"""Against a real API and worker: cancel over HTTP, the per-job time limit, and retried submissions."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import update

from service.config import Settings
from service.db import transaction
from service.models import Job, JobStatus

pytestmark = [pytest.mark.chaos, pytest.mark.integration, pytest.mark.timeout(240)]


def test_cancel_a_running_job_stops_it_within_an_epoch_and_frees_the_worker(running_cluster):
    world = running_cluster
    dataset = world.upload()
    job = world.submit(dataset, epochs=100)
    world.wait_row(
        job, lambda row: row.status == JobStatus.running and row.progress_epoch >= 1, what="training under way"
    )

    response = world.http.post(f"/v1/jobs/{job}/cancel")
    assert response.status_code == 202, response.text
    assert response.json()["cancel_requested"] is True
    at_cancel = world.row(job).progress_epoch
    row = world.wait_final(job, timeout=30)
    assert row.status == JobStatus.cancelled and row.progress_epoch <= at_cancel + 1
    assert (row.model_id, world.model_count(job), world.artefacts(job)) == (None, 0, [])
    assert world.http.get(f"/v1/jobs/{job}/artifacts").json() == []

    second = world.submit(dataset, epochs=2)  # the worker is free again
    world.wait_final(second, timeout=60)
    world.assert_trained_once(second, epochs=2)
    for finished in (job, second):
        conflict = world.http.post(f"/v1/jobs/{finished}/cancel")
        assert conflict.status_code == 409 and "already" in conflict.json()["detail"], conflict.text


def test_time_limit_fails_the_job_with_a_readable_reason(running_cluster):
    world = running_cluster
    job = world.submit(world.upload(), epochs=500, max_runtime_seconds=3)
    row = world.wait_final(job, timeout=60)
    assert (row.status, row.error_type) == (JobStatus.failed, "TimeLimitExceeded")
    assert "time limit of 3 s" in row.error_message and "max_runtime_seconds" in row.error_message
    assert row.progress_epoch < 500 and world.model_count(job) == 0 and world.artefacts(job) == []
    error = world.job(job)["error"]
    assert error == {"type": "TimeLimitExceeded", "message": row.error_message}


def test_a_retried_submit_returns_the_first_job_for_the_idempotency_window(running_cluster):
    """A client whose response was lost retries with the same Idempotency-Key: one job, for 48 h."""
    world = running_cluster
    dataset = world.upload(train=(80, 20))
    key = {"Idempotency-Key": "submit-7f3a"}
    first = world.post_job(dataset, headers=key, epochs=1)
    retried = world.post_job(dataset, headers=key, epochs=1)
    assert (first.status_code, retried.status_code) == (202, 202) and first.json()["id"] == retried.json()["id"]
    job = first.json()["id"]
    changed = world.post_job(dataset, headers=key, epochs=2)
    assert changed.status_code == 422 and "Idempotency-Key reused" in changed.json()["title"], changed.text
    world.wait_final(job, timeout=60)

    hours = Settings.model_fields["idempotency_ttl_hours"].default
    assert hours >= 24

    def created_hours_ago(age: float) -> None:
        with transaction(world.factory) as session:
            session.execute(update(Job).where(Job.id == job).values(created_at=Job.created_at - timedelta(hours=age)))

    created_hours_ago(hours - 1)
    assert world.post_job(dataset, headers=key, epochs=1).json()["id"] == job
    created_hours_ago(2)  # now hours + 1 old: the key is forgotten and names a new job
    fresh = world.post_job(dataset, headers=key, epochs=1)
    assert fresh.status_code == 202 and fresh.json()["id"] != job
    world.wait_final(fresh.json()["id"], timeout=60)
