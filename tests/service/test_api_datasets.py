"""Datasets over HTTP: a real upload, listing, names, delete (409 while a job uses it)."""

from __future__ import annotations

import pytest

from service.api.routes.datasets import dataset_name


def test_upload_pneumoniamnist_answers_201_with_the_summary(api_client, alpha, pneumonia_npz):
    with pneumonia_npz.open("rb") as handle:
        response = api_client.post(
            "/v1/datasets", files={"file": ("pneumoniamnist.npz", handle, "application/octet-stream")}, headers=alpha
        )
    assert response.status_code == 201, response.text
    body = response.json()
    assert response.headers["location"] == f"/v1/datasets/{body['id']}"
    assert body["name"] == "pneumoniamnist" and body["format"] == "npz" and body["status"] == "ready"
    assert body["num_classes"] == 2 and body["image_shape"] == [28, 28, 1]
    assert body["splits"]["train"] == {"count": 4708, "class_counts": [1214, 3494], "masked_class_counts": None}
    assert body["mask_classes"] == []
    assert body["splits"]["val"]["class_counts"] == [135, 389]
    assert body["splits"]["test"]["class_counts"] == [234, 390]
    assert body["imbalance_ratio"] == pytest.approx(3494 / 1214, rel=1e-3)
    assert api_client.get(f"/v1/datasets/{body['id']}", headers=alpha).json() == body
    store = api_client.app.state.blob_store
    assert store.exists(f"datasets/{body['id']}/train_labels.npy")
    # A job can train on it; while the job is queued the dataset cannot go.
    job = api_client.post("/v1/jobs", json={"dataset_id": body["id"]}, headers=alpha).json()
    conflict = api_client.delete(f"/v1/datasets/{body['id']}", headers=alpha)
    assert conflict.status_code == 409 and conflict.headers["content-type"] == "application/problem+json"
    assert api_client.post(f"/v1/jobs/{job['id']}/cancel", headers=alpha).status_code == 202
    assert api_client.delete(f"/v1/datasets/{body['id']}", headers=alpha).status_code == 204
    assert not store.exists(f"datasets/{body['id']}/train_labels.npy")
    assert api_client.get(f"/v1/datasets/{body['id']}", headers=alpha).status_code == 404
    assert api_client.delete(f"/v1/datasets/{body['id']}", headers=alpha).status_code == 404
    # The finished job still names its (deleted) dataset; a new job on it is refused.
    assert api_client.get(f"/v1/jobs/{job['id']}", headers=alpha).json()["dataset_id"] == body["id"]
    assert api_client.post("/v1/jobs", json={"dataset_id": body["id"]}, headers=alpha).status_code == 404


def test_rejected_upload_is_a_problem_and_leaves_nothing(api_client, alpha):
    response = api_client.post("/v1/datasets", files={"file": ("notes.txt", b"hello", "text/plain")}, headers=alpha)
    assert response.status_code == 415, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["detail"]
    assert api_client.get("/v1/datasets", headers=alpha).json()["items"] == []


def test_upload_needs_a_file_and_a_key(api_client, alpha):
    missing = api_client.post("/v1/datasets", data={"name": "x"}, headers=alpha)
    assert missing.status_code == 422 and missing.json()["errors"][0]["loc"][-1] == "file"
    assert api_client.post("/v1/datasets", files={"file": ("a.npz", b"x")}).status_code == 401


def test_list_pages_newest_first(api_client, alpha, new_dataset):
    ids = [new_dataset(alpha) for _ in range(3)]
    page = api_client.get("/v1/datasets", params={"limit": 2}, headers=alpha).json()
    assert [d["id"] for d in page["items"]] == ids[::-1][:2]
    assert page["limit"] == 2 and page["offset"] == 0 and page["next_offset"] == 2
    assert api_client.get("/v1/datasets", params={"limit": 0}, headers=alpha).status_code == 422


@pytest.mark.parametrize(
    ("given", "filename", "expected"),
    [
        (None, "pneumoniamnist.npz", "pneumoniamnist"),
        (None, "../../etc/chest.tar.gz", "chest"),
        (None, "C:\\data\\skin lesions.ZIP", "skin lesions"),
        ("  ", "x.tgz", "x"),
        ("my\x00 data\nset", "x.npz", "my data set"),
        (None, "", "dataset"),
        (None, "a" * 300 + ".zip", "a" * 200),
    ],
)
def test_dataset_names_are_sanitised(given, filename, expected):
    assert dataset_name(given=given, filename=filename) == expected
