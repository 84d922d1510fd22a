"""SSE from ``rarefit api --workers 2`` on PostgreSQL: live epochs, heartbeats, a lossless resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import httpx
import pytest
from job_rows import add_dataset
from test_api_processes import api_children, ready, wait_for

from service.db import make_engine, make_session_factory, transaction
from service.migrate import upgrade_head
from service.models import JobStatus, Tenant, utcnow
from service.repository import leases

pytestmark = pytest.mark.integration
REPO_ROOT = Path(__file__).resolve().parents[2]
KEY = "rf_live-events-test-key-0123456789"


def read_events(lines, *, until, pings: list[str]) -> list[dict]:
    """Parse Server-Sent Events off the wire until ``until(events)`` holds or the stream ends."""
    events, fields = [], {}
    for line in lines:
        if line.startswith(":"):
            pings.append(line)
        elif line == "" and fields:
            events.append({"id": int(fields["id"]), "event": fields["event"], **json.loads(fields["data"])})
            fields = {}
            if until(events):
                break
        elif ":" in line:
            name, _, value = line.partition(":")
            fields[name] = value.removeprefix(" ")
    return events


def worker_step(factory, action, **values) -> None:
    with transaction(factory) as session:
        assert action(session, job_id=values.pop("job_id"), worker_id="w", **values)


def epoch(factory, job_id: str, number: int) -> None:
    record = {"epoch": number, "train_loss": 1.0, "val_loss": 0.5, "lr": 0.1, "seconds": 0.1}
    worker_step(factory, leases.record_epoch, job_id=job_id, record=record)


def add_bootstrap_dataset(factory) -> str:
    """A dataset row of the bootstrap tenant (no blobs: nothing here trains)."""
    with transaction(factory) as session:
        tenant = session.query(Tenant).filter_by(name="default").one()
        summary = {"count": 20, "class_counts": [10, 10]}
        splits = {name: summary for name in ("train", "val", "test")}
        return add_dataset(session, tenant_id=tenant.id, splits=splits).id


@pytest.fixture
def api(postgres_url, redis_url, free_port, rarefit_cmd, tmp_path):
    upgrade_head(postgres_url)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAREFIT_")}
    env.update(
        RAREFIT_DATA_DIR=str(tmp_path / "data"),
        RAREFIT_DATABASE_URL=postgres_url,
        RAREFIT_BROKER_URL=redis_url,
        RAREFIT_BOOTSTRAP_API_KEY=KEY,
        RAREFIT_EVENTS_POLL_SECONDS="0.1",
        RAREFIT_EVENTS_PING_SECONDS="0.3",
        PYTHONUNBUFFERED="1",
    )
    url = f"http://127.0.0.1:{free_port}"
    with (tmp_path / "api.log").open("wb") as log:
        command = [*rarefit_cmd, "api", "--host", "127.0.0.1", "--port", str(free_port), "--workers", "2"]
        parent = subprocess.Popen(
            command, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        wait_for(lambda: len(api_children(parent.pid)) == 2 and ready(url), timeout=180, what="two API processes")
        yield url
    finally:
        parent.send_signal(signal.SIGTERM)
        try:
            parent.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(parent.pid, signal.SIGKILL)
            parent.wait()


def test_every_epoch_arrives_exactly_once_across_a_reconnect(api, postgres_url):
    engine = make_engine(postgres_url)
    factory = make_session_factory(engine)
    dataset_id = add_bootstrap_dataset(factory)
    headers = {"Authorization": f"Bearer {KEY}"}
    client = httpx.Client(base_url=api, headers=headers, timeout=httpx.Timeout(30.0))
    try:
        reply = client.post("/v1/jobs", json={"dataset_id": dataset_id, "epochs": 4})
        assert reply.status_code == 202, reply.text
        job_id = reply.json()["id"]
        with transaction(factory) as session:
            assert leases.claim_job(session, job_id=job_id, worker_id="w", lease_seconds=60, now=utcnow())
        epoch(factory, job_id, 1)
        pings: list[str] = []
        with client.stream("GET", f"/v1/jobs/{job_id}/events") as response:
            lines = response.iter_lines()
            first = read_events(lines, until=lambda seen: any(e.get("epoch") == 1 for e in seen), pings=pings)
            epoch(factory, job_id, 2)  # written while the client listens: it arrives live
            first += read_events(lines, until=lambda seen: any(e.get("epoch") == 2 for e in seen), pings=pings)
        # The connection is gone; the job goes on.
        epoch(factory, job_id, 3)
        epoch(factory, job_id, 4)
        worker_step(factory, leases.finish_job, job_id=job_id, status=JobStatus.succeeded)
        resume = {"Last-Event-ID": str(first[-1]["id"])}
        with client.stream("GET", f"/v1/jobs/{job_id}/events", headers=resume) as response:
            rest = read_events(
                response.iter_lines(), until=lambda seen: False, pings=pings
            )  # ends when the job has ended
        seen = first + rest
        assert [e["epoch"] for e in seen if e["event"] == "epoch"] == [1, 2, 3, 4]
        assert [e["status"] for e in seen if e["event"] == "status"] == ["queued", "running", "succeeded"]
        assert [e["id"] for e in seen] == sorted({e["id"] for e in seen})
    finally:
        client.close()
        engine.dispose()


def test_an_idle_stream_sends_heartbeats(api, postgres_url):
    engine = make_engine(postgres_url)
    factory = make_session_factory(engine)
    dataset_id = add_bootstrap_dataset(factory)
    headers = {"Authorization": f"Bearer {KEY}"}
    try:
        with httpx.Client(base_url=api, headers=headers, timeout=30.0) as client:
            job_id = client.post("/v1/jobs", json={"dataset_id": dataset_id}).json()["id"]
            pings: list[str] = []
            with client.stream("GET", f"/v1/jobs/{job_id}/events") as response:
                for line in response.iter_lines():
                    if line.startswith(":"):
                        pings.append(line)
                    if len(pings) == 2:
                        break
            assert len(pings) == 2
    finally:
        engine.dispose()
