"""Webhooks end to end: signed deliveries to a real local receiver, retries, the documented check, tenancy."""

from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path

import httpx
import pytest
from standardwebhooks import Webhook as ReferenceVerifier
from webhook_receiver import start_receiver

from service.db import transaction
from service.models import JobStatus, utcnow
from service.repository import leases
from service.webhooks import deliver_due

DOCS = Path(__file__).resolve().parents[2] / "docs" / "live.md"


@pytest.fixture
def api_settings(sqlite_settings, _migrated_template):
    """The folder's settings, with private targets allowed (the receiver is on 127.0.0.1) and quick retries."""
    settings = sqlite_settings(
        webhooks_allow_private=True,
        webhook_backoff_seconds=0.01,
        webhook_backoff_max_seconds=0.05,
    )
    shutil.copyfile(_migrated_template, settings.data_dir / "rarefit.db")
    return settings


@pytest.fixture
def receiver():
    made = []

    def make(fail_first: int = 0):
        pair = start_receiver(fail_first=fail_first)
        made.append(pair[1])
        return pair[0]

    yield make
    for server in made:
        server.shutdown()
        server.server_close()


def subscribe(api_client, headers, url: str, events=("job.succeeded",)) -> dict:
    response = api_client.post("/v1/webhooks", json={"url": url, "events": list(events)}, headers=headers)
    assert response.status_code == 201, response.text
    return response.json()


def run_job(api_client, api_db, headers, dataset_id: str, status: JobStatus = JobStatus.succeeded) -> str:
    job_id = api_client.post("/v1/jobs", json={"dataset_id": dataset_id}, headers=headers).json()["id"]
    with transaction(api_db) as session:
        leases.claim_job(session, job_id=job_id, worker_id="w", lease_seconds=60, now=utcnow())
    with transaction(api_db) as session:
        assert leases.finish_job(session, job_id=job_id, worker_id="w", status=status)
    return job_id


def deliver_until(api_client, api_db, done, *, passes: int = 50) -> None:
    with httpx.Client(timeout=5.0) as client:
        for _ in range(passes):
            deliver_due(api_client.app.state.settings, api_db, client=client)
            if done():
                return
            time.sleep(0.05)
    raise AssertionError("deliveries did not finish")


def test_a_local_receiver_gets_a_signed_job_succeeded(api_client, api_db, alpha, new_dataset, receiver):
    inbox = receiver()
    hook = subscribe(api_client, alpha, inbox.url)
    assert hook["secret"].startswith("whsec_") and "secret" not in api_client.get("/v1/webhooks", headers=alpha).text
    job_id = run_job(api_client, api_db, alpha, new_dataset(alpha))
    deliver_until(api_client, api_db, lambda: len(inbox.requests) == 1)
    request = inbox.requests[0]
    payload = ReferenceVerifier(hook["secret"]).verify(request.body, request.headers)
    assert payload["type"] == "job.succeeded" and payload["data"]["job_id"] == job_id
    assert payload["data"]["status"] == "succeeded"
    page = api_client.get(f"/v1/webhooks/{hook['id']}/deliveries", headers=alpha).json()
    [delivery] = page["items"]  # queued and running were not subscribed to
    assert (delivery["status"], delivery["event_type"]) == ("succeeded", "job.succeeded")
    assert [a["status_code"] for a in delivery["attempts"]] == [200]


def test_a_receiver_failing_twice_gets_the_event_on_the_third_attempt(api_client, api_db, alpha, new_dataset, receiver):
    inbox = receiver(fail_first=2)
    hook = subscribe(api_client, alpha, inbox.url, events=["job.failed"])
    run_job(api_client, api_db, alpha, new_dataset(alpha), status=JobStatus.failed)
    url = f"/v1/webhooks/{hook['id']}/deliveries"
    deliver_until(
        api_client, api_db, lambda: api_client.get(url, headers=alpha).json()["items"][0]["status"] != "pending"
    )
    [delivery] = api_client.get(url, headers=alpha).json()["items"]
    assert delivery["status"] == "succeeded"
    assert [a["status_code"] for a in delivery["attempts"]] == [500, 500, 200]
    assert [a["number"] for a in delivery["attempts"]] == [1, 2, 3]
    assert delivery["attempts"][0]["error"] == "receiver answered 500"
    assert len({r.headers["webhook-id"] for r in inbox.requests}) == 1  # one message id: receivers can dedupe


def test_delivery_gives_up_after_the_attempt_limit(api_client, api_db, alpha, new_dataset, receiver):
    inbox = receiver(fail_first=100)
    hook = subscribe(api_client, alpha, inbox.url)
    run_job(api_client, api_db, alpha, new_dataset(alpha))
    limit = api_client.app.state.settings.webhook_max_attempts
    url = f"/v1/webhooks/{hook['id']}/deliveries"
    deliver_until(
        api_client,
        api_db,
        lambda: api_client.get(url, headers=alpha).json()["items"][0]["status"] != "pending",
        passes=limit * 20,
    )
    [delivery] = api_client.get(url, headers=alpha).json()["items"]
    assert delivery["status"] == "failed" and len(delivery["attempts"]) == limit == len(inbox.requests)


def documented_verifier():
    """The verification snippet of docs/live.md, run as written."""
    block = re.search(r"```python\n(# verify a rarefit webhook.*?)```", DOCS.read_text(), re.S)
    assert block, "docs/live.md lost its verification snippet"
    namespace: dict = {}
    exec(block.group(1), namespace)  # noqa: S102 - our own documentation
    return namespace["verify"]


def test_the_documented_snippet_accepts_a_real_delivery_and_detects_a_bad_signature(
    api_client, api_db, alpha, new_dataset, receiver
):
    inbox = receiver()
    hook = subscribe(api_client, alpha, inbox.url)
    run_job(api_client, api_db, alpha, new_dataset(alpha))
    deliver_until(api_client, api_db, lambda: len(inbox.requests) == 1)
    verify, request = documented_verifier(), inbox.requests[0]
    assert verify(hook["secret"], request.headers, request.body)["type"] == "job.succeeded"
    tampered = request.body.replace(b"succeeded", b"failed")
    with pytest.raises(ValueError, match="signature"):
        verify(hook["secret"], request.headers, tampered)
    other_secret = subscribe(api_client, alpha, inbox.url)["secret"]
    with pytest.raises(ValueError, match="signature"):
        verify(other_secret, request.headers, request.body)
    stale = {**request.headers, "webhook-timestamp": str(int(time.time()) - 3600)}
    with pytest.raises(ValueError, match="timestamp"):
        verify(hook["secret"], stale, request.body)


def test_webhooks_are_per_tenant_and_a_deleted_one_gets_nothing(api_client, api_db, alpha, beta, new_dataset, receiver):
    inbox = receiver()
    hook = subscribe(api_client, alpha, inbox.url)
    assert api_client.get(f"/v1/webhooks/{hook['id']}", headers=beta).status_code == 404
    assert api_client.get(f"/v1/webhooks/{hook['id']}/deliveries", headers=beta).status_code == 404
    assert api_client.delete(f"/v1/webhooks/{hook['id']}", headers=beta).status_code == 404
    run_job(api_client, api_db, beta, new_dataset(beta))  # beta's job: nothing owed to alpha's hook
    assert api_client.get(f"/v1/webhooks/{hook['id']}/deliveries", headers=alpha).json()["items"] == []
    assert api_client.delete(f"/v1/webhooks/{hook['id']}", headers=alpha).status_code == 204
    run_job(api_client, api_db, alpha, new_dataset(alpha))
    with httpx.Client() as client:
        assert deliver_due(api_client.app.state.settings, api_db, client=client) == 0
    assert inbox.requests == [] and api_client.get("/v1/webhooks", headers=alpha).json() == []


def test_bad_bodies_are_422_naming_the_field(api_client, alpha, receiver):
    url = receiver().url
    cases = [
        ({"url": url, "events": ["job.exploded"]}, "events"),
        ({"url": url, "events": []}, "events"),
        ({"url": url, "events": ["job.succeeded"], "secret": "hunter2"}, "secret"),
        ({"url": url, "events": ["job.succeeded"], "extra": 1}, "extra"),
        ({"url": "ftp://example.com/x", "events": ["job.succeeded"]}, "url"),
    ]
    for body, field_name in cases:
        response = api_client.post("/v1/webhooks", json=body, headers=alpha)
        assert response.status_code == 422, body
        assert field_name in json.dumps(response.json()["errors"]), response.text
