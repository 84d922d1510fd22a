"""The spine of rarefit, over HTTP only: upload → train → metrics → artefacts → predict.

One real ``rarefit serve`` per variant: the embedded default (SQLite database
and broker, no server needed) and production-shaped (PostgreSQL + Redis, the
embedded worker consuming from Redis). A second tenant sees none of it.
"""

from __future__ import annotations

import base64
import io
import math
import re
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import pytest
from metric_blocks import METRIC_BLOCK_KEYS
from PIL import Image

pytestmark = pytest.mark.e2e

REPO_ROOT = Path(__file__).resolve().parents[2]
POLL_TIMEOUT_S = 8 * 60
PER_CLASS_FIELDS = {"class", "precision", "recall", "f1", "support"}
ARTEFACTS = {"model.pt2", "model.onnx", "weights.safetensors", "model_card.json", "metrics.json", "scores.npz"}
# PneumoniaMNIST's official splits (shared/data/README.md): the oracle for ingest and metrics.
CLASS_COUNTS = {"train": [1214, 3494], "val": [135, 389], "test": [234, 390]}
JOB_SPEC = {
    "model": {"arch": "simple_cnn"},
    "loss": {"type": "focal", "gamma": 2, "alpha": 0.25},
    "mixing": {"mode": "cutmix"},
    "sampler": {"type": "weighted"},
}


def _client(server, key: str) -> httpx.Client:
    return httpx.Client(base_url=server.base_url, headers={"Authorization": f"Bearer {key}"}, timeout=60.0)


def _upload(client: httpx.Client, npz: Path) -> dict:
    with npz.open("rb") as handle:
        response = client.post("/v1/datasets", files={"file": (npz.name, handle, "application/octet-stream")})
    assert response.status_code == 201, response.text
    dataset = response.json()
    assert dataset["status"] == "ready" and dataset["format"] == "npz"
    assert dataset["num_classes"] == 2 and dataset["image_shape"] == [28, 28, 1]
    assert {s: dataset["splits"][s]["class_counts"] for s in CLASS_COUNTS} == CLASS_COUNTS
    return dataset


def _submit(client: httpx.Client, *, dataset_id: str, epochs: int) -> dict:
    response = client.post("/v1/jobs", json={**JOB_SPEC, "dataset_id": dataset_id, "epochs": epochs})
    assert response.status_code == 202, response.text
    job = response.json()
    assert job["status"] == "queued" and job["progress"] == {"epoch": 0, "epochs": epochs}
    assert response.headers["location"].endswith(f"/v1/jobs/{job['id']}")
    return job


def _wait_succeeded(client: httpx.Client, job_id: str, server) -> dict:
    deadline = time.monotonic() + POLL_TIMEOUT_S
    while time.monotonic() < deadline:
        response = client.get(f"/v1/jobs/{job_id}")
        assert response.status_code == 200, response.text
        job = response.json()
        if job["status"] == "succeeded":
            return job
        if job["status"] in ("failed", "cancelled"):
            pytest.fail(f"job {job['status']}: {job['error']}\n{server.log_tail()}")
        time.sleep(1.0)
    pytest.fail(f"job {job_id} not finished after {POLL_TIMEOUT_S}s: {job}\n{server.log_tail()}")


def _check_block(block: dict, *, split: str, tuned: bool) -> None:
    assert METRIC_BLOCK_KEYS <= set(block), f"{split} block lacks {METRIC_BLOCK_KEYS - set(block)}"
    for name in ("accuracy", "balanced_accuracy", "macro_f1", "auroc", "average_precision"):
        assert 0.0 <= block[name] <= 1.0, (split, name, block[name])
    assert [row["support"] for row in block["per_class"]] == CLASS_COUNTS[split]
    assert all(PER_CLASS_FIELDS <= set(row) for row in block["per_class"])
    matrix = np.asarray(block["confusion_matrix"])
    assert matrix.shape == (2, 2) and matrix.sum(axis=1).tolist() == CLASS_COUNTS[split]
    # The tuned threshold (strategy max_f1, the default) is chosen on val and applied to test.
    if tuned or block["threshold"] is not None:
        assert isinstance(block["threshold"], float) and 0.0 <= block["threshold"] <= 1.0, block["threshold"]
    assert len(block["pr_curve"]) > 0


def _check_metrics(client: httpx.Client, job_id: str, *, epochs: int) -> dict:
    response = client.get(f"/v1/jobs/{job_id}/metrics")
    assert response.status_code == 200, response.text
    metrics = response.json()
    assert [row["epoch"] for row in metrics["history"]] == list(range(1, epochs + 1))
    for row in metrics["history"]:
        assert all(math.isfinite(row[k]) for k in ("train_loss", "val_loss", "lr", "seconds")), row
        _check_block(row["val"], split="val", tuned=False)
    assert 1 <= metrics["best_epoch"] <= epochs
    _check_block(metrics["test"], split="test", tuned=True)
    return metrics


def _check_artefacts(client: httpx.Client, job_id: str) -> None:
    response = client.get(f"/v1/jobs/{job_id}/artifacts")
    assert response.status_code == 200, response.text
    listed = {item["name"]: item for item in response.json()}
    assert ARTEFACTS <= set(listed), sorted(listed)
    card = client.get(f"/v1/jobs/{job_id}/artifacts/model_card.json")
    assert card.status_code == 200 and len(card.content) == listed["model_card.json"]["size"]
    assert card.json()["class_names"] == ["0", "1"]
    assert card.json()["onnx"]["file"] == "model.onnx" and card.json()["onnx"]["max_abs_diff"] < 1e-3


def _png_instances(npz: Path, count: int) -> list[bytes]:
    with np.load(npz) as arrays:
        images = arrays["test_images"][:count]
    encoded = []
    for image in images:
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="PNG")  # (28, 28) uint8: mode "L"
        encoded.append(buffer.getvalue())
    return encoded


def _check_predictions(body: dict, *, model_id: str, count: int) -> list[list[float]]:
    assert body["model_id"] == model_id and len(body["predictions"]) == count
    rows = []
    for prediction in body["predictions"]:
        probabilities = prediction["probabilities"]
        assert set(probabilities) == {"0", "1"}
        assert sum(probabilities.values()) == pytest.approx(1.0, abs=1e-6)
        assert prediction["class_index"] in (0, 1)
        assert prediction["label"] == str(prediction["class_index"])
        rows.append([probabilities["0"], probabilities["1"]])
    return rows


def _check_predict(client: httpx.Client, model_id: str, npz: Path) -> None:
    pngs = _png_instances(npz, 8)
    files = [("files", (f"{i}.png", png, "image/png")) for i, png in enumerate(pngs)]
    multipart = client.post(f"/v1/models/{model_id}/predict", files=files)
    assert multipart.status_code == 200, multipart.text
    instances = [{"b64": base64.b64encode(png).decode()} for png in pngs]
    as_json = client.post(f"/v1/models/{model_id}/predict", json={"instances": instances})
    assert as_json.status_code == 200, as_json.text
    by_file = _check_predictions(multipart.json(), model_id=model_id, count=8)
    by_b64 = _check_predictions(as_json.json(), model_id=model_id, count=8)
    np.testing.assert_allclose(by_file, by_b64, atol=1e-5)  # same images, same model


def _create_key(server, rarefit_cmd: list[str], tenant: str) -> str:
    result = subprocess.run(
        [*rarefit_cmd, "keys", "create", "--tenant", tenant],
        cwd=REPO_ROOT,
        env=server.env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    keys = re.findall(r"rf_[A-Za-z0-9_\-]{20,}", result.stdout)
    assert keys, f"no key in `rarefit keys create` output: {result.stdout!r}"
    return keys[-1]


def _check_isolation(other: httpx.Client, *, dataset_id: str, job_id: str, model_id: str) -> None:
    for path in (
        f"/v1/datasets/{dataset_id}",
        f"/v1/jobs/{job_id}",
        f"/v1/jobs/{job_id}/metrics",
        f"/v1/jobs/{job_id}/artifacts",
        f"/v1/jobs/{job_id}/artifacts/model.pt2",
        f"/v1/models/{model_id}",
    ):
        assert other.get(path).status_code == 404, path
    predict = other.post(f"/v1/models/{model_id}/predict", json={"instances": [{"b64": "AAAA"}]})
    assert predict.status_code == 404, predict.text


def _backend_env(backend: str, request: pytest.FixtureRequest) -> dict[str, str]:
    if backend == "embedded":
        return {}
    new_postgres_url: Callable[[], str] = request.getfixturevalue("new_postgres_url")
    redis_url: str = request.getfixturevalue("redis_url")
    return {"RAREFIT_DATABASE_URL": new_postgres_url(), "RAREFIT_BROKER_URL": redis_url}


@pytest.mark.timeout(900)
@pytest.mark.parametrize(
    ("backend", "epochs"),
    [("embedded", 3), pytest.param("postgres_redis", 1, marks=pytest.mark.integration)],
)
def test_upload_train_predict_over_http(
    backend: str,
    epochs: int,
    request: pytest.FixtureRequest,
    start_server,
    rarefit_cmd: list[str],
    pneumonia_npz: Path,
) -> None:
    server = start_server(extra_env=_backend_env(backend, request))
    with _client(server, server.api_key) as client:
        assert httpx.get(f"{server.base_url}/v1/datasets").status_code == 401  # no key
        dataset = _upload(client, pneumonia_npz)
        job = _wait_succeeded(client, _submit(client, dataset_id=dataset["id"], epochs=epochs)["id"], server)
        metrics = _check_metrics(client, job["id"], epochs=epochs)
        if backend == "embedded":  # the PostgreSQL variant trains one epoch to keep CI short
            assert metrics["test"]["balanced_accuracy"] >= 0.70, metrics["test"]
        _check_artefacts(client, job["id"])
        model = client.get(f"/v1/models/{job['model_id']}")
        assert model.status_code == 200, model.text
        assert model.json()["class_names"] == ["0", "1"] and model.json()["source_job_id"] == job["id"]
        _check_predict(client, job["model_id"], pneumonia_npz)
    with _client(server, _create_key(server, rarefit_cmd, "other")) as other:
        _check_isolation(other, dataset_id=dataset["id"], job_id=job["id"], model_id=job["model_id"])
