"""Every error is RFC 9457 problem+json; probes answer without a key."""

from __future__ import annotations

import time

from sqlalchemy.exc import TimeoutError as PoolTimeout

from service.main import create_app

PROBLEM_KEYS = {"type", "title", "status", "detail"}


def _is_problem(response, status: int) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert PROBLEM_KEYS <= set(body) and body["status"] == status
    return body


def test_unknown_route_and_wrong_method(api_client, alpha):
    _is_problem(api_client.get("/v1/nothing-here", headers=alpha), 404)
    body = _is_problem(api_client.put("/v1/jobs", headers=alpha), 405)
    assert body["title"] == "Method Not Allowed"
    assert "POST" in api_client.put("/v1/jobs", headers=alpha).headers["allow"]


def test_validation_problem_names_the_first_field_and_echoes_no_input(api_client, alpha):
    secret = "s3cr3t-value-that-must-not-echo"
    body = _is_problem(
        api_client.post("/v1/jobs", json={"dataset_id": "d", "loss": {"gamma": -1, "note": secret}}, headers=alpha),
        422,
    )
    assert body["detail"].startswith("loss.gamma: Input should be greater than or equal to 0")
    assert {tuple(error["loc"]) for error in body["errors"]} == {("body", "loss", "gamma"), ("body", "loss", "note")}
    assert secret not in str(body)


def test_unexpected_errors_are_a_bare_500(api_app, api_client, caplog):
    def boom() -> None:
        raise RuntimeError("leaked /srv/rarefit/secret.txt")

    api_app.add_api_route("/boom", boom)
    body = _is_problem(api_client.get("/boom"), 500)
    assert "secret" not in api_client.get("/boom").text and "Traceback" not in str(body)
    assert any("unhandled error" in record.message for record in caplog.records)


def test_health_and_readiness(api_client):
    assert api_client.get("/healthz").json() == {"status": "ok"}
    assert api_client.get("/readyz").json() == {"database": "ok", "broker": "ok", "blob_store": "ok"}
    assert api_client.get("/docs").status_code == 200


def test_readiness_names_the_broken_broker(sqlite_settings, api_settings):
    from starlette.testclient import TestClient

    settings = sqlite_settings(broker_url="redis://127.0.0.1:9/0")  # nothing listens on port 9
    assert settings.sqlalchemy_url == api_settings.sqlalchemy_url  # same migrated database
    with TestClient(create_app(settings, run_reaper=False), raise_server_exceptions=False) as client:
        started = time.monotonic()
        body = _is_problem(client.get("/readyz"), 503)
        assert time.monotonic() - started < 15
    assert "broker" in body["detail"] and "database" not in body["detail"]
    assert body["checks"] == {"database": "ok", "broker": "down", "blob_store": "ok"}


def test_an_exhausted_connection_pool_is_a_503_to_retry_not_a_500(api_app, api_client):
    def busy():
        raise PoolTimeout("QueuePool limit reached")

    api_app.add_api_route("/busy", busy)
    response = api_client.get("/busy")
    assert response.status_code == 503 and response.headers["retry-after"] == "1"
    assert response.json()["detail"] == "the service is overloaded; retry later"
