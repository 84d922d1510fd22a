"""The API's job flow on PostgreSQL: concurrency, conditional updates, hostile ids.

The other API tests run on SQLite; this module reruns the parts where the two
databases differ (locking, NUL bytes in text, timezone-aware timestamps).
"""

from __future__ import annotations

import threading

import pytest

from service.migrate import upgrade_head
from service.models import Job


@pytest.fixture(scope="module")
def _pg_url(new_postgres_url) -> str:
    """One migrated database for the module (tests share it, so they assert on their own rows)."""
    url = new_postgres_url()
    upgrade_head(url)
    return url


@pytest.fixture
def api_settings(sqlite_settings, _pg_url):
    return sqlite_settings(database_url=_pg_url, max_concurrent_jobs_per_tenant=3, max_epochs=50)


def test_concurrent_retries_with_one_idempotency_key_make_one_job(api_client, api_db, alpha, new_dataset):
    dataset_id = new_dataset(alpha)
    headers = {**alpha, "Idempotency-Key": "race"}
    barrier, results = threading.Barrier(4), []

    def submit() -> None:
        barrier.wait()
        results.append(api_client.post("/v1/jobs", json={"dataset_id": dataset_id}, headers=headers))

    threads = [threading.Thread(target=submit) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [r.status_code for r in results] == [202] * 4
    assert len({r.json()["id"] for r in results}) == 1
    with api_db() as session:
        assert session.query(Job).filter_by(idempotency_key="race").count() == 1


def test_job_flow_and_timestamps(api_client, alpha, beta, new_dataset):
    dataset_id = new_dataset(alpha)
    job = api_client.post("/v1/jobs", json={"dataset_id": dataset_id}, headers=alpha).json()
    assert job["created_at"].endswith(("Z", "+00:00"))
    cancelled = api_client.post(f"/v1/jobs/{job['id']}/cancel", headers=alpha).json()
    assert cancelled["status"] == "cancelled" and cancelled["finished_at"] >= cancelled["created_at"]
    assert api_client.post(f"/v1/jobs/{job['id']}/cancel", headers=alpha).status_code == 409
    assert api_client.get(f"/v1/jobs/{job['id']}", headers=beta).status_code == 404
    assert api_client.delete(f"/v1/datasets/{dataset_id}", headers=alpha).status_code == 204


@pytest.mark.parametrize("bad", ["%00", "a%00b", "x" * 300])
def test_ids_no_row_can_have_answer_404_not_500(api_client, alpha, bad):
    for path in (f"/v1/jobs/{bad}", f"/v1/datasets/{bad}", f"/v1/models/{bad}", f"/v1/jobs/{bad}/metrics"):
        assert api_client.get(path, headers=alpha).status_code == 404, path
    response = api_client.post("/v1/jobs", json={"dataset_id": "d\u0000"}, headers=alpha)
    assert response.status_code == 404
