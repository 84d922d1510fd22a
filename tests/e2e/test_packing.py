"""Several jobs share one worker (``RAREFIT_JOBS_PER_GPU``): they run at once, each keeps its own lease,
and the cores are split between them instead of oversubscribed."""

from __future__ import annotations

import os
import re
import time

import pytest
from test_experiments import BASE, _upload
from test_spine import _client

from workers.celery_app import threads_per_job

pytestmark = pytest.mark.e2e


def test_threads_per_job_splits_the_cores_evenly_and_never_drops_to_zero():
    assert threads_per_job(cores=16, slots=4) == 4
    assert threads_per_job(cores=2, slots=2) == 1
    assert threads_per_job(cores=2, slots=8) == 1
    assert threads_per_job(cores=8, slots=3) == 2


@pytest.mark.timeout(600)
def test_two_packed_jobs_run_at_once_each_with_its_own_lease(start_server) -> None:
    server = start_server(extra_env={"RAREFIT_JOBS_PER_GPU": "2"})
    with _client(server, server.api_key) as client:
        dataset_id = _upload(client)
        spec = {**BASE, "dataset_id": dataset_id, "epochs": 12}
        ids = [client.post("/v1/jobs", json={**spec, "seed": seed}).json()["id"] for seed in (0, 1)]
        together, deadline = False, time.monotonic() + 300
        while time.monotonic() < deadline:
            jobs = [client.get(f"/v1/jobs/{job_id}").json() for job_id in ids]
            together = together or all(job["status"] == "running" for job in jobs)
            if all(job["status"] in ("succeeded", "failed", "cancelled") for job in jobs):
                break
            time.sleep(0.5)
        assert together, f"the two jobs never ran at the same time\n{server.log_tail()}"
        assert [job["status"] for job in jobs] == ["succeeded", "succeeded"], server.log_tail()
        assert all(job["attempts"] == 1 and job["progress"]["epoch"] == 12 for job in jobs)
    expected = threads_per_job(cores=os.cpu_count() or 1, slots=2)
    assert re.search(
        rf"pool process \d+: {expected} torch threads \(2 jobs share the cores\)", server.log_path.read_text()
    )
