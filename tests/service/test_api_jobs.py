"""POST /v1/jobs and friends: validation, idempotency, caps, cancel, metrics, artefacts."""

from __future__ import annotations

import pytest

from service.db import transaction
from service.models import Job, JobStatus
from service.queue import TASK_NAME


def _submit(api_client, headers, body, **kwargs):
    return api_client.post("/v1/jobs", json=body, headers=headers, **kwargs)


def test_submit_answers_202_with_location_and_the_job(api_client, api_db, alpha, new_dataset):
    dataset_id = new_dataset(alpha)
    response = _submit(api_client, alpha, {"dataset_id": dataset_id, "epochs": 3})
    assert response.status_code == 202
    job = response.json()
    assert response.headers["location"] == f"/v1/jobs/{job['id']}"
    assert job["status"] == "queued" and job["dataset_id"] == dataset_id
    assert job["progress"] == {"epoch": 0, "epochs": 3}
    assert job["error"] is None and job["model_id"] is None and job["started_at"] is None
    assert job["created_at"].endswith("Z") or job["created_at"].endswith("+00:00")
    # Dataset-aware defaults (a small toy set), filled in and stored.
    assert job["spec"]["loss"]["type"] == "balanced_softmax"
    assert api_client.get(response.headers["location"], headers=alpha).json() == job
    with api_db() as session:
        assert session.get(Job, job["id"]).enqueued_at is not None  # the broker took the message


def test_submit_sends_the_job_id_to_the_broker(api_client, alpha, new_dataset):
    job_id = _submit(api_client, alpha, {"dataset_id": new_dataset(alpha)}).json()["id"]
    celery_app = api_client.app.state.celery
    with celery_app.connection_for_read() as connection:
        message = connection.SimpleQueue("train").get(timeout=5)
        message.ack()
    assert message.headers["task"] == TASK_NAME
    assert message.payload[0] == [job_id]  # protocol 2 body: [args, kwargs, embed]


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ('{"dataset_id": "d", "loss": {"type": "focal", "gamma": NaN}}', "loss.gamma"),
        ('{"dataset_id": "d", "loss": {"gamma": -1}}', "loss.gamma"),
        ('{"dataset_id": "d", "loss": {"type": "focal", "alpha": 1.5}}', "loss.alpha"),
        ('{"dataset_id": "d", "optimiser": {"lr": 0.1}}', "optimiser"),
        ('{"dataset_id": "d", "optim": {"lr": Infinity}}', "optim.lr"),
        ('{"loss": {}}', "dataset_id"),
        ('{"dataset_id": "d", "epochs": 51}', "epochs"),
        ('{"dataset_id": "d", "batch_size": 100000}', "batch_size"),
        ('{"dataset_id": "d",', "body"),
        ('{"dataset_id": "d", "epochs": true}', "epochs"),
        ('{"dataset_id": "d", "epochs": "5"}', "epochs"),
        ('{"dataset_id": "d", "batch_size": 64.0}', "batch_size"),
        ('{"dataset_id": "d", "optim": {"lr": true}}', "optim.lr"),
        ('{"dataset_id": "d", "augment": {"scale": ["0.9", 1.1]}}', "augment.scale.0"),
    ],
    ids=[
        "nan",
        "negative-gamma",
        "alpha-1.5",
        "unknown-key",
        "inf",
        "missing-dataset",
        "epochs-cap",
        "batch-size",
        "broken-json",
        "bool-for-int",
        "string-for-int",
        "float-for-int",
        "bool-for-float",
        "string-in-a-pair",
    ],
)
def test_invalid_specs_answer_422_naming_the_field(api_client, alpha, raw, field):
    response = api_client.post("/v1/jobs", content=raw, headers={**alpha, "Content-Type": "application/json"})
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["detail"].startswith(field), body
    assert body["errors"] and all(set(error) == {"loc", "msg", "type"} for error in body["errors"])
    assert all(error["loc"][0] == "body" for error in body["errors"])


def test_server_cap_is_reported_like_a_validation_error(api_client, alpha, new_dataset):
    body = _submit(api_client, alpha, {"dataset_id": new_dataset(alpha), "epochs": 51}).json()
    assert body["errors"] == [
        {"loc": ["body", "epochs"], "msg": "epochs 51 exceeds this server's limit 50", "type": "value_error"}
    ]


def test_per_class_lists_must_match_the_dataset(api_client, alpha, new_dataset):
    spec = {"dataset_id": new_dataset(alpha, num_classes=3), "loss": {"type": "focal", "alpha": [0.25, 0.75]}}
    response = _submit(api_client, alpha, spec)
    assert response.status_code == 422
    assert response.json()["errors"][0]["loc"] == ["body", "loss", "alpha"]
    assert "3" in response.json()["detail"]


def test_unknown_dataset_is_404_naming_it(api_client, alpha):
    response = _submit(api_client, alpha, {"dataset_id": "f" * 32})
    assert response.status_code == 404
    assert "f" * 32 in response.json()["detail"]


def test_idempotency_key_returns_the_first_job(api_client, api_db, alpha, new_dataset):
    dataset_id = new_dataset(alpha)
    headers = {**alpha, "Idempotency-Key": "retry-me"}
    first = _submit(api_client, headers, {"dataset_id": dataset_id})
    again = _submit(api_client, headers, {"epochs": 40, "dataset_id": dataset_id})  # same spec, spelled out
    assert first.status_code == again.status_code == 202
    assert again.json()["id"] == first.json()["id"]
    assert again.headers["location"] == first.headers["location"]
    other = _submit(api_client, headers, {"dataset_id": dataset_id, "epochs": 5})
    assert other.status_code == 422
    assert "Idempotency-Key reused with a different body" in other.json()["detail"]
    with api_db() as session:
        assert session.query(Job).count() == 1
    assert _submit(api_client, {**alpha, "Idempotency-Key": "x" * 201}, {"dataset_id": dataset_id}).status_code == 422


def test_idempotency_keys_are_per_tenant(api_client, alpha, beta, new_dataset):
    a = _submit(api_client, {**alpha, "Idempotency-Key": "k"}, {"dataset_id": new_dataset(alpha)})
    b = _submit(api_client, {**beta, "Idempotency-Key": "k"}, {"dataset_id": new_dataset(beta)})
    assert a.status_code == b.status_code == 202 and a.json()["id"] != b.json()["id"]


def test_active_job_cap_answers_429_and_frees_up_after_cancel(api_client, alpha, new_dataset):
    dataset_id = new_dataset(alpha)
    ids = [_submit(api_client, alpha, {"dataset_id": dataset_id}).json()["id"] for _ in range(3)]
    response = _submit(api_client, alpha, {"dataset_id": dataset_id})
    assert response.status_code == 429 and "3" in response.json()["detail"]
    assert api_client.post(f"/v1/jobs/{ids[0]}/cancel", headers=alpha).status_code == 202
    assert _submit(api_client, alpha, {"dataset_id": dataset_id}).status_code == 202


def test_cancel_queued_then_again_is_409(api_client, alpha, new_dataset):
    job_id = _submit(api_client, alpha, {"dataset_id": new_dataset(alpha)}).json()["id"]
    response = api_client.post(f"/v1/jobs/{job_id}/cancel", headers=alpha)
    assert response.status_code == 202
    job = response.json()
    assert job["status"] == "cancelled" and job["finished_at"] is not None
    again = api_client.post(f"/v1/jobs/{job_id}/cancel", headers=alpha)
    assert again.status_code == 409 and "cancelled" in again.json()["detail"]
    assert api_client.post(f"/v1/jobs/{'0' * 32}/cancel", headers=alpha).status_code == 404


def test_cancel_running_sets_the_flag_for_the_worker(api_client, api_db, alpha, new_dataset):
    job_id = _submit(api_client, alpha, {"dataset_id": new_dataset(alpha)}).json()["id"]
    with transaction(api_db) as session:
        session.get(Job, job_id).status = JobStatus.running
    job = api_client.post(f"/v1/jobs/{job_id}/cancel", headers=alpha).json()
    assert job["status"] == "running" and job["cancel_requested"] is True
    assert api_client.post(f"/v1/jobs/{job_id}/cancel", headers=alpha).status_code == 202  # idempotent


def test_list_filters_by_status_newest_first_and_pages(api_client, alpha, new_dataset):
    dataset_id = new_dataset(alpha)
    ids = [_submit(api_client, alpha, {"dataset_id": dataset_id}).json()["id"] for _ in range(3)]
    api_client.post(f"/v1/jobs/{ids[1]}/cancel", headers=alpha)
    page = api_client.get("/v1/jobs", params={"limit": 2}, headers=alpha).json()
    assert [job["id"] for job in page["items"]] == ids[::-1][:2] and page["next_offset"] == 2
    rest = api_client.get("/v1/jobs", params={"limit": 2, "offset": 2}, headers=alpha).json()
    assert [job["id"] for job in rest["items"]] == [ids[0]] and rest["next_offset"] is None
    cancelled = api_client.get("/v1/jobs", params={"status": "cancelled"}, headers=alpha).json()["items"]
    assert [job["id"] for job in cancelled] == [ids[1]]
    bad = api_client.get("/v1/jobs", params={"status": "exploded"}, headers=alpha)
    assert bad.status_code == 422 and bad.json()["errors"][0]["loc"] == ["query", "status"]


def test_metrics_and_artifacts_of_a_finished_job(api_client, alpha, new_dataset, complete_job):
    job_id = _submit(api_client, alpha, {"dataset_id": new_dataset(alpha)}).json()["id"]
    assert api_client.get(f"/v1/jobs/{job_id}/metrics", headers=alpha).json() == {
        "history": [],
        "best_epoch": None,
        "test": None,
    }
    model_id = complete_job(job_id)
    metrics = api_client.get(f"/v1/jobs/{job_id}/metrics", headers=alpha).json()
    assert [row["epoch"] for row in metrics["history"]] == [1, 2]
    assert set(metrics["history"][0]) == {"epoch", "train_loss", "val_loss", "val", "lr", "seconds"}
    assert metrics["best_epoch"] == 2 and metrics["test"] == {"accuracy": 0.9}
    job = api_client.get(f"/v1/jobs/{job_id}", headers=alpha).json()
    assert job["status"] == "succeeded" and job["model_id"] == model_id
    listing = api_client.get(f"/v1/jobs/{job_id}/artifacts", headers=alpha).json()
    assert [(a["name"], a["size"], a["content_type"]) for a in listing] == [("metrics.json", 12, "application/json")]
    file = api_client.get(f"/v1/jobs/{job_id}/artifacts/metrics.json", headers=alpha)
    assert file.status_code == 200 and file.content == b'{"ok": true}'
    assert file.headers["content-type"] == "application/json"
    assert api_client.get(f"/v1/jobs/{job_id}/artifacts/model.pt2", headers=alpha).status_code == 404
    model = api_client.get(f"/v1/models/{model_id}", headers=alpha).json()
    assert model["source_job_id"] == job_id and model["threshold"] == 0.4 and model["class_names"] == ["c0", "c1"]


def test_openapi_documents_the_job_spec_example(api_client):
    schema = api_client.get("/openapi.json").json()
    operation = schema["paths"]["/v1/jobs"]["post"]
    examples = operation["requestBody"]["content"]["application/json"]["examples"]
    assert examples["focal_cutmix"]["value"]["loss"]["type"] == "focal"
    assert "/v1/jobs/{job_id}/cancel" in schema["paths"]
