"""A tenant sees only its own objects: another tenant's id answers 404 everywhere, never 403."""

from __future__ import annotations


def _alpha_objects(api_client, alpha, new_dataset, complete_job):
    dataset_id = new_dataset(alpha)
    done = api_client.post("/v1/jobs", json={"dataset_id": dataset_id, "epochs": 2}, headers=alpha).json()["id"]
    model_id = complete_job(done)
    queued = api_client.post("/v1/jobs", json={"dataset_id": dataset_id}, headers=alpha).json()["id"]
    return dataset_id, done, queued, model_id


def test_every_object_endpoint_hides_other_tenants(api_client, alpha, beta, new_dataset, complete_job):
    dataset_id, done, queued, model_id = _alpha_objects(api_client, alpha, new_dataset, complete_job)
    calls = [
        ("GET", f"/v1/datasets/{dataset_id}"),
        ("DELETE", f"/v1/datasets/{dataset_id}"),
        ("GET", f"/v1/jobs/{done}"),
        ("POST", f"/v1/jobs/{queued}/cancel"),
        ("GET", f"/v1/jobs/{done}/metrics"),
        ("GET", f"/v1/jobs/{done}/artifacts"),
        ("GET", f"/v1/jobs/{done}/artifacts/metrics.json"),
        ("GET", f"/v1/models/{model_id}"),
    ]
    for method, path in calls:
        # The owner can reach it (so a 404 for beta is isolation, not a broken path) ...
        if method == "GET":
            assert api_client.request(method, path, headers=alpha).status_code == 200, path
        response = api_client.request(method, path, headers=beta)
        assert response.status_code == 404, (method, path, response.text)
        assert response.headers["content-type"] == "application/problem+json"
    # ... and nothing beta tried changed alpha's objects.
    assert api_client.get(f"/v1/jobs/{queued}", headers=alpha).json()["status"] == "queued"
    assert api_client.get(f"/v1/datasets/{dataset_id}", headers=alpha).status_code == 200


def test_lists_show_only_own_objects(api_client, alpha, beta, new_dataset, complete_job):
    dataset_id, done, queued, model_id = _alpha_objects(api_client, alpha, new_dataset, complete_job)
    for path in ("/v1/datasets", "/v1/jobs", "/v1/models"):
        assert api_client.get(path, headers=beta).json()["items"] == [], path
    assert [d["id"] for d in api_client.get("/v1/datasets", headers=alpha).json()["items"]] == [dataset_id]
    assert {j["id"] for j in api_client.get("/v1/jobs", headers=alpha).json()["items"]} == {done, queued}
    assert [m["id"] for m in api_client.get("/v1/models", headers=alpha).json()["items"]] == [model_id]


def test_jobs_cannot_use_another_tenants_dataset_or_model(api_client, alpha, beta, new_dataset, complete_job):
    dataset_id, done, _queued, _model_id = _alpha_objects(api_client, alpha, new_dataset, complete_job)
    response = api_client.post("/v1/jobs", json={"dataset_id": dataset_id}, headers=beta)
    assert response.status_code == 404
    assert dataset_id in response.json()["detail"]
    own_dataset = new_dataset(beta)
    spec = {"dataset_id": own_dataset, "model": {"arch": "simple_cnn", "init": f"job:{done}"}}
    response = api_client.post("/v1/jobs", json=spec, headers=beta)
    assert response.status_code == 422
    assert response.json()["errors"][0]["loc"] == ["body", "model", "init"]
    # The owner may fine-tune from it.
    spec["dataset_id"] = dataset_id
    assert api_client.post("/v1/jobs", json=spec, headers=alpha).status_code == 202
