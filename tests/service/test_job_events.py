"""The event log and what reads it: SSE of a job, ETag polling, metrics since an epoch."""

from __future__ import annotations

import pytest
from httpx_sse import connect_sse
from sqlalchemy import select
from tenant_keys import tenant_id_of

from service.db import transaction
from service.models import Event, Experiment, ExperimentStatus, JobStatus
from service.repository import experiments, leases

NOW_LEASE = 60.0


def submit(api_client, headers, dataset_id: str, epochs: int = 3) -> str:
    response = api_client.post("/v1/jobs", json={"dataset_id": dataset_id, "epochs": epochs}, headers=headers)
    assert response.status_code == 202, response.text
    return response.json()["id"]


def claim(factory, job_id: str) -> None:
    from service.models import utcnow

    with transaction(factory) as session:
        assert leases.claim_job(session, job_id=job_id, worker_id="w", lease_seconds=NOW_LEASE, now=utcnow())


def record(factory, job_id: str, epoch: int) -> None:
    values = {"epoch": epoch, "train_loss": 1.0 / epoch, "val_loss": 0.5, "lr": 1e-3, "seconds": 0.1}
    with transaction(factory) as session:
        assert leases.record_epoch(session, job_id=job_id, worker_id="w", record={**values, "val": {"auroc": 0.7}})


def finish(factory, job_id: str, status: JobStatus = JobStatus.succeeded) -> None:
    with transaction(factory) as session:
        assert leases.finish_job(session, job_id=job_id, worker_id="w", status=status, best_epoch=1)


def stream(api_client, headers, job_id: str, **extra) -> list:
    with connect_sse(api_client, "GET", f"/v1/jobs/{job_id}/events", headers={**headers, **extra}) as source:
        assert source.response.status_code == 200
        return list(source.iter_sse())


@pytest.fixture
def trained(api_client, api_db, alpha, new_dataset) -> str:
    job_id = submit(api_client, alpha, new_dataset(alpha))
    claim(api_db, job_id)
    for epoch in (1, 2, 3):
        record(api_db, job_id, epoch)
    finish(api_db, job_id)
    return job_id


def test_a_finished_jobs_stream_tells_its_whole_story_in_order_and_ends(api_client, alpha, trained):
    events = stream(api_client, alpha, trained)
    kinds = [(e.event, e.json().get("status"), e.json().get("epoch")) for e in events]
    assert kinds == [
        ("status", "queued", None),
        ("status", "running", None),
        ("epoch", None, 1),
        ("epoch", None, 2),
        ("epoch", None, 3),
        ("status", "succeeded", None),
    ]
    ids = [int(e.id) for e in events]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert events[2].json()["train_loss"] == 1.0 and events[2].json()["val"] == {"auroc": 0.7}
    assert events[-1].json()["job_id"] == trained and events[-1].json()["type"] == "job.succeeded"


def test_last_event_id_resumes_after_it_so_each_epoch_arrives_exactly_once(api_client, alpha, trained):
    first = stream(api_client, alpha, trained)
    cut = next(e for e in first if e.event == "epoch" and e.json()["epoch"] == 2)
    rest = stream(api_client, alpha, trained, **{"Last-Event-ID": cut.id})
    seen = [e.json()["epoch"] for e in first[: first.index(cut) + 1] + rest if e.event == "epoch"]
    assert seen == [1, 2, 3]
    assert [e.event for e in rest] == ["epoch", "status"]
    assert stream(api_client, alpha, trained, **{"Last-Event-ID": first[-1].id}) == []


def test_a_bad_last_event_id_is_a_422_naming_the_header(api_client, alpha, trained):
    response = api_client.get(f"/v1/jobs/{trained}/events", headers={**alpha, "Last-Event-ID": "abc"})
    assert response.status_code == 422
    assert "last-event-id" in response.text.lower()


def test_another_tenants_job_stream_is_404(api_client, beta, trained):
    assert api_client.get(f"/v1/jobs/{trained}/events", headers=beta).status_code == 404


def test_a_rolled_back_change_writes_no_event(api_client, api_db, alpha, new_dataset):
    from service.models import utcnow

    job_id = submit(api_client, alpha, new_dataset(alpha))
    with pytest.raises(RuntimeError), transaction(api_db) as session:
        leases.claim_job(session, job_id=job_id, worker_id="w", lease_seconds=NOW_LEASE, now=utcnow())
        raise RuntimeError("the worker died before committing")
    with api_db() as session:
        types = list(session.scalars(select(Event.type).where(Event.subject == f"job:{job_id}")))
    assert types == ["job.queued"]


def test_cancelling_a_queued_job_ends_its_stream_with_a_cancelled_event(api_client, alpha, new_dataset):
    job_id = submit(api_client, alpha, new_dataset(alpha))
    assert api_client.post(f"/v1/jobs/{job_id}/cancel", headers=alpha).status_code == 202
    assert [e.json()["status"] for e in stream(api_client, alpha, job_id)] == ["queued", "cancelled"]


def test_etag_answers_304_until_the_job_changes(api_client, api_db, alpha, new_dataset):
    from service.models import utcnow

    job_id = submit(api_client, alpha, new_dataset(alpha))
    claim(api_db, job_id)
    first = api_client.get(f"/v1/jobs/{job_id}", headers=alpha)
    etag = first.headers["ETag"]
    again = api_client.get(f"/v1/jobs/{job_id}", headers={**alpha, "If-None-Match": etag})
    assert (again.status_code, again.content, again.headers["ETag"]) == (304, b"", etag)
    with transaction(api_db) as session:  # a heartbeat is not a change a client can see
        assert leases.renew_lease(session, job_id=job_id, worker_id="w", lease_seconds=NOW_LEASE, now=utcnow()).held
    assert api_client.get(f"/v1/jobs/{job_id}", headers={**alpha, "If-None-Match": etag}).status_code == 304
    record(api_db, job_id, 1)
    changed = api_client.get(f"/v1/jobs/{job_id}", headers={**alpha, "If-None-Match": f'W/{etag}, "x"'})
    assert changed.status_code == 200 and changed.headers["ETag"] != etag
    assert changed.json()["progress"]["epoch"] == 1
    assert changed.json()["updated_at"] > first.json()["updated_at"]
    assert api_client.get(f"/v1/jobs/{job_id}", headers={**alpha, "If-None-Match": "*"}).status_code == 304


def test_metrics_since_epoch_returns_only_later_epochs(api_client, alpha, trained):
    response = api_client.get(f"/v1/jobs/{trained}/metrics", params={"since_epoch": 1}, headers=alpha)
    assert [row["epoch"] for row in response.json()["history"]] == [2, 3]
    assert (
        api_client.get(f"/v1/jobs/{trained}/metrics", params={"since_epoch": 3}, headers=alpha).json()["history"] == []
    )
    bad = api_client.get(f"/v1/jobs/{trained}/metrics", params={"since_epoch": True}, headers=alpha)
    assert bad.status_code == 422 and "since_epoch" in bad.text


def test_an_experiments_stream_tells_its_states_and_ends(api_client, api_db, alpha, beta, new_dataset):
    dataset_id = new_dataset(alpha)
    with transaction(api_db) as session:
        row = experiments.create_experiment(
            session,
            tenant_id=tenant_id_of(api_db, alpha),
            dataset_id=dataset_id,
            name="e",
            stored={},
            trials_total=2,
            warnings=[],
        )
        experiments.set_status(session, row, ExperimentStatus.running)
    with transaction(api_db) as session:
        experiments.set_status(session, session.get(Experiment, row.id), ExperimentStatus.succeeded)
    url = f"/v1/experiments/{row.id}/events"
    with connect_sse(api_client, "GET", url, headers=alpha) as source:
        seen = [(e.event, e.json()["status"]) for e in source.iter_sse()]
    assert seen == [("status", "queued"), ("status", "running"), ("status", "succeeded")]
    assert api_client.get(url, headers=beta).status_code == 404
