"""``GET /metrics`` behind the operator token, request ids on answers, problems and log lines, JSON logs.

The app is the real one on SQLite (``api_settings``, with a metrics token);
counters are process-wide, so counts are checked as differences between two
scrapes.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr
from starlette.testclient import TestClient

from service.api.deps import get_tenant_id
from service.config import Settings
from service.logs import configure_logging, request_id
from service.main import create_app
from service.queue import celery_config

TOKEN = "operator-metrics-token-0123456789"
OPERATOR = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def client(api_settings: Settings) -> Iterator[TestClient]:
    settings = api_settings.model_copy(update={"metrics_token": SecretStr(TOKEN)})
    with TestClient(create_app(settings, run_reaper=False), raise_server_exceptions=False) as client:
        yield client


@pytest.fixture
def root_logging() -> Iterator[None]:
    """Leave the root logger as it was (configure_logging replaces its handlers)."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def samples(client: TestClient) -> dict[tuple[str, frozenset], float]:
    response = client.get("/metrics", headers=OPERATOR)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    found = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def value(found: dict, name: str, **labels: str) -> float:
    return found.get((name, frozenset(labels.items())), 0.0)


def test_metrics_need_the_operator_token_not_a_tenant_key(client, bootstrap_headers, api_settings) -> None:
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers=bootstrap_headers).status_code == 401  # a tenant key is not enough
    assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.get("/metrics", headers=OPERATOR).status_code == 200
    with TestClient(create_app(api_settings, run_reaper=False), raise_server_exceptions=False) as off:
        response = off.get("/metrics", headers=OPERATOR)
    assert response.status_code == 404 and "RAREFIT_METRICS_TOKEN" in response.json()["detail"]


def test_metrics_count_requests_by_route_and_report_jobs_from_the_database(
    client, bootstrap_headers, new_dataset, complete_job
) -> None:
    dataset = new_dataset(bootstrap_headers)
    job = client.post("/v1/jobs", headers=bootstrap_headers, json={"dataset_id": dataset, "epochs": 2}).json()["id"]
    before = samples(client)
    for _ in range(3):
        assert client.get(f"/v1/jobs/{job}", headers=bootstrap_headers).status_code == 200
    assert client.get("/v1/jobs/nope", headers=bootstrap_headers).status_code == 404
    assert client.get("/no/such/path").status_code == 404
    complete_job(job)
    after = samples(client)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    route = {"route": "/v1/jobs/{job_id}", "method": "GET"}
    assert delta("rarefit_http_requests_total", status="200", **route) == 3
    assert delta("rarefit_http_requests_total", status="404", **route) == 1
    assert delta("rarefit_http_requests_total", route="unmatched", method="GET", status="404") == 1
    assert delta("rarefit_http_request_duration_seconds_count", **route) == 4
    assert value(after, "rarefit_jobs", state="succeeded") == 1 and value(after, "rarefit_jobs", state="queued") == 0
    assert value(before, "rarefit_jobs", state="queued") == 1
    assert value(after, "rarefit_epoch_duration_seconds_count") == 2  # the two epochs the worker recorded
    assert value(after, "rarefit_epoch_duration_seconds_bucket", le="0.1") == 2
    assert value(after, "rarefit_epoch_duration_seconds_sum") == pytest.approx(0.2)
    assert ("rarefit_queue_depth", frozenset({("queue", "train")})) in after


def test_the_request_id_is_echoed_named_in_problems_and_in_log_lines(
    client, bootstrap_headers, new_dataset, capsys, root_logging
) -> None:
    configure_logging(client.app.state.settings)
    answer = client.get("/v1/jobs/nope", headers={**bootstrap_headers, "X-Request-ID": "trace-42.a:b"})
    assert answer.headers["X-Request-ID"] == "trace-42.a:b" and answer.json()["instance"] == "trace-42.a:b"
    generated = client.get("/healthz", headers={"X-Request-ID": "bad id <script>"}).headers["X-Request-ID"]
    assert re.fullmatch(r"[0-9a-f]{32}", generated)  # an unsafe id is replaced, never echoed
    assert client.get("/healthz").headers["X-Request-ID"] != generated
    dataset = new_dataset(bootstrap_headers)
    headers = {**bootstrap_headers, "X-Request-ID": "submit-1"}
    job = client.post("/v1/jobs", headers=headers, json={"dataset_id": dataset}).json()["id"]
    lines = [line for line in capsys.readouterr().err.splitlines() if f"submitted job {job}" in line]
    assert len(lines) == 1 and "[request=submit-1]" in lines[0]
    cancel = client.post("/v1/jobs/nope/cancel", headers={**bootstrap_headers, "X-Request-ID": "cancel-7"})
    assert cancel.json()["instance"] == "cancel-7"


def test_an_unhandled_exception_answers_a_500_problem_with_the_request_id(client, bootstrap_headers) -> None:
    def broken_lookup() -> str:
        raise RuntimeError("leaked /srv/rarefit/secret.txt")

    client.app.dependency_overrides[get_tenant_id] = broken_lookup  # a real /v1 route fails inside
    answer = client.get("/v1/jobs/any", headers={**bootstrap_headers, "X-Request-ID": "crash-3"})
    assert answer.status_code == 500 and answer.headers["content-type"] == "application/problem+json"
    body = answer.json()
    assert answer.headers["X-Request-ID"] == body["instance"] == "crash-3"
    assert body["detail"] == "an unexpected error occurred; it has been logged"
    assert "secret" not in answer.text and "Traceback" not in answer.text and "RuntimeError" not in answer.text
    generated = client.get("/v1/jobs/any", headers=bootstrap_headers)
    assert re.fullmatch(r"[0-9a-f]{32}", generated.headers["X-Request-ID"])
    assert generated.json()["instance"] == generated.headers["X-Request-ID"]


def test_json_logs_carry_the_request_and_job_ids(api_settings, capsys, root_logging) -> None:
    configure_logging(api_settings.model_copy(update={"log_format": "json", "log_level": "DEBUG"}))
    token = request_id.set("req-9")
    try:
        logging.getLogger("rarefit.test").info("hello %s", "world")
    finally:
        request_id.reset(token)
    line = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert (line["message"], line["level"], line["logger"], line["request_id"]) == (
        "hello world",
        "INFO",
        "rarefit.test",
        "req-9",
    )
    assert line["job_id"] is None and "time" in line


def test_log_settings_are_checked_and_task_events_follow_the_setting(sqlite_settings) -> None:
    assert sqlite_settings(log_level="debug", log_format="JSON").log_level == "DEBUG"
    with pytest.raises(ValueError, match="log_format"):
        sqlite_settings(log_format="xml")
    assert celery_config(sqlite_settings())["worker_send_task_events"] is False
    on = celery_config(sqlite_settings(celery_task_events=True))
    assert on["worker_send_task_events"] is True and on["task_send_sent_event"] is True
