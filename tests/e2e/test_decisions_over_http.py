"""Decisions you can trust, over HTTP only, against a real ``rarefit serve`` (issue 12's proof).

A job with ``recall_at_least`` 0.9 for the minority class reports its test
recall and the Clopper–Pearson lower bound; a PATCH to ``precision_at_least``
0.9 changes predict's labels on the same images without retraining; an alias
switch changes which model answers; a second tenant gets 404 on models,
aliases and by-alias predict. PneumoniaMNIST with a 1200-image train subset
(val and test whole, so the bounds rest on hundreds of samples).
"""

from __future__ import annotations

import base64
import io
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image
from test_spine import _client, _create_key, _wait_succeeded

pytestmark = pytest.mark.e2e

MINORITY = "0"  # PneumoniaMNIST train: 1214 normal (0), 3494 pneumonia (1)
SPEC = {"model": {"arch": "simple_cnn"}, "epochs": 2, "batch_size": 64}


def _subset(source: Path, folder: Path) -> Path:
    with np.load(source) as arrays:
        data = {name: arrays[name] for name in arrays.files}
    keep = np.random.default_rng(0).permutation(len(data["train_labels"]))[:1200]
    data["train_images"], data["train_labels"] = data["train_images"][keep], data["train_labels"][keep]
    path = folder / "pneumonia_small.npz"
    np.savez_compressed(path, **data)
    return path


def _instances(npz: Path, count: int) -> tuple[list[dict], np.ndarray]:
    with np.load(npz) as arrays:
        images = arrays["test_images"][:count]
    encoded = []
    for image in images:
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="PNG")
        encoded.append({"b64": base64.b64encode(buffer.getvalue()).decode()})
    return encoded, images


def _train(client: httpx.Client, server, dataset_id: str, threshold: dict) -> dict:
    response = client.post("/v1/jobs", json={**SPEC, "dataset_id": dataset_id, "threshold": threshold})
    assert response.status_code == 202, response.text
    return _wait_succeeded(client, response.json()["id"], server)


def _labels(client: httpx.Client, path: str, instances: list[dict]) -> tuple[list[int], list[dict]]:
    answer = client.post(path, json={"instances": instances})
    assert answer.status_code == 200, answer.text
    predictions = answer.json()["predictions"]
    return [p["class_index"] for p in predictions], predictions


@pytest.mark.timeout(900)
def test_guarantee_refit_alias_and_isolation_over_http(start_server, rarefit_cmd, pneumonia_npz, tmp_path) -> None:
    server = start_server()
    npz = _subset(pneumonia_npz, tmp_path)
    with _client(server, server.api_key) as client, npz.open("rb") as handle:
        dataset = client.post("/v1/datasets", files={"file": (npz.name, handle, "application/octet-stream")}).json()
        recall_policy = {"strategy": "recall_at_least", "value": 0.9, "class": MINORITY}
        job = _train(client, server, dataset["id"], recall_policy)
        test = client.get(f"/v1/jobs/{job['id']}/metrics").json()["test"]
        normal = test["per_class"][0]
        assert normal["class"] == MINORITY and normal["support"] == 234
        assert 0 <= normal["recall_lower_bound"] <= normal["recall"] <= 1 and "precision_lower_bound" in normal
        assert test["operating_point"]["thresholds"].keys() == {"0"} and test["calibration"]["temperature"] > 0

        model_id = job["model_id"]
        instances, _ = _instances(npz, 96)
        before, first = _labels(client, f"/v1/models/{model_id}/predict", instances)
        precision_policy = {"strategy": "precision_at_least", "value": 0.9, "class": MINORITY}
        patched = client.patch(f"/v1/models/{model_id}", json={"threshold": precision_policy})
        assert patched.status_code == 200, patched.text
        new_threshold = patched.json()["operating_point"]["thresholds"]["0"]
        assert patched.json()["revision"] == 1 and len(patched.json()["history"]) == 2
        after, second = _labels(client, f"/v1/models/{model_id}/predict", instances)
        assert after != before  # the same images, the same program, another operating point
        assert all((p["class_index"] == 0) == (p["probabilities"]["0"] >= new_threshold) for p in second)
        assert [p["probabilities"] for p in first] == [p["probabilities"] for p in second]  # no retraining

        other_job = _train(client, server, dataset["id"], {"strategy": "max_f1"})
        for target in (model_id, other_job["model_id"]):
            assert client.put("/v1/models/aliases/production", json={"model_id": target}).status_code == 200
            routed = client.post("/v1/models/by-alias/production/predict", json={"instances": instances[:2]})
            assert routed.status_code == 200 and routed.json()["model_id"] == target
    with _client(server, _create_key(server, rarefit_cmd, "other")) as other:
        assert other.get(f"/v1/models/{model_id}").status_code == 404
        assert other.patch(f"/v1/models/{model_id}", json={"threshold": {"strategy": "none"}}).status_code == 404
        assert other.get("/v1/models/aliases/production").status_code == 404
        by_alias = other.post("/v1/models/by-alias/production/predict", json={"instances": instances[:1]})
        assert by_alias.status_code == 404
