"""Experiments over HTTP on a real ``rarefit serve``: a 2-trial × 2-seed grid to the end, cancel, tenancy.

Embedded default (SQLite database and broker, Optuna in its own SQLite file)
and production-shaped (PostgreSQL + Redis, Optuna in its own schema).
"""

from __future__ import annotations

import io
import time

import httpx
import numpy as np
import pytest
from PIL import Image
from test_spine import _backend_env, _client, _create_key

pytestmark = pytest.mark.e2e

POLL_TIMEOUT_S = 8 * 60
BASE = {"model": {"arch": "simple_cnn"}, "epochs": 2, "batch_size": 32, "augment": {"rotation": 0, "scale": None}}
GRID = {
    "name": "loss types",
    "base": BASE,
    "search": {"strategy": "grid", "space": {"loss.type": ["cross_entropy", "focal"]}},
    "seeds": [0, 1],
    "budget": {"max_parallel": 2},
}
FAST = {"RAREFIT_REAPER_INTERVAL_SECONDS": "2"}


def _npz(*, counts: tuple[int, int] = (120, 40), seed: int = 0) -> bytes:
    """Two classes that differ in brightness: learnable in an epoch by a small CNN."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, scale in (("train", 1), ("val", 4), ("test", 4)):
        labels = np.concatenate([np.full(n // scale, c) for c, n in enumerate(counts)])
        images = rng.integers(0, 120, size=(len(labels), 28, 28)) + 100 * labels[:, None, None]
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = images.astype(np.uint8), labels
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def _upload(client: httpx.Client) -> str:
    response = client.post("/v1/datasets", files={"file": ("toy.npz", _npz(), "application/octet-stream")})
    assert response.status_code == 201, response.text
    return response.json()["id"]


def _wait(client: httpx.Client, experiment_id: str, server, *, until: tuple[str, ...]) -> dict:
    deadline = time.monotonic() + POLL_TIMEOUT_S
    while time.monotonic() < deadline:
        body = client.get(f"/v1/experiments/{experiment_id}").json()
        if body["status"] in until:
            return body
        time.sleep(1.0)
    pytest.fail(f"experiment {experiment_id} still {body['status']}: {body['progress']}\n{server.log_tail()}")


def _jobs(client: httpx.Client, experiment_id: str) -> list[dict]:
    response = client.get("/v1/jobs", params={"experiment_id": experiment_id})
    assert response.status_code == 200, response.text
    return response.json()["items"]


def _check_leaderboard(body: dict) -> None:
    assert body["status"] == "succeeded", body
    assert body["progress"]["trials_done"] == body["progress"]["trials_total"] == 2
    rows = body["leaderboard"]
    assert [row["rank"] for row in rows] == [1, 2]
    assert {row["params"]["loss.type"] for row in rows} == {"cross_entropy", "focal"}
    for row in rows:
        assert len(row["jobs"]) == 2 and {job["seed"] for job in row["jobs"]} == {0, 1}
        for split in ("val", "test"):
            for name in ("objective", "balanced_accuracy", "accuracy", "auroc"):
                summary = row[split][name]
                assert len(summary["per_seed"]) == 2 and summary["std"] >= 0.0
                assert summary["mean"] == pytest.approx(sum(summary["per_seed"]) / 2)
    assert rows[0]["val"]["objective"]["mean"] >= rows[1]["val"]["objective"]["mean"]
    assert rows[0]["within_noise_of_best"] is True
    best = body["best"]
    assert best["trial"] == rows[0]["trial"] and best["model_id"] in {job["model_id"] for job in rows[0]["jobs"]}


def _check_best_predicts(client: httpx.Client, model_id: str) -> None:
    buffer = io.BytesIO()
    Image.fromarray(np.full((28, 28), 200, dtype=np.uint8)).save(buffer, format="PNG")
    response = client.post(f"/v1/models/{model_id}/predict", files=[("files", ("x.png", buffer.getvalue()))])
    assert response.status_code == 200, response.text
    assert len(response.json()["predictions"]) == 1


@pytest.mark.timeout(1200)
@pytest.mark.parametrize("backend", ["embedded", pytest.param("postgres_redis", marks=pytest.mark.integration)])
def test_a_grid_experiment_runs_to_a_ranked_leaderboard_and_cancel_stops_every_child(
    backend: str, request: pytest.FixtureRequest, start_server, rarefit_cmd: list[str]
) -> None:
    server = start_server(extra_env={**FAST, **_backend_env(backend, request)})
    with _client(server, server.api_key) as client:
        dataset_id = _upload(client)
        response = client.post("/v1/experiments", json={**GRID, "dataset_id": dataset_id})
        assert response.status_code == 202, response.text
        experiment_id = response.json()["id"]
        body = _wait(client, experiment_id, server, until=("succeeded", "failed", "cancelled"))
        _check_leaderboard(body)
        jobs = _jobs(client, experiment_id)
        assert len(jobs) == 4 and all(job["status"] == "succeeded" for job in jobs)
        assert sorted((job["trial"], job["spec"]["seed"]) for job in jobs) == [(0, 0), (0, 1), (1, 0), (1, 1)]
        _check_best_predicts(client, body["best"]["model_id"])

        longer = {**GRID, "dataset_id": dataset_id, "base": {**BASE, "epochs": 40}}
        cancelled_id = client.post("/v1/experiments", json=longer).json()["id"]
        _wait(client, cancelled_id, server, until=("running",))
        response = client.post(f"/v1/experiments/{cancelled_id}/cancel")
        assert response.status_code == 202 and response.json()["status"] == "cancelled"
        deadline = time.monotonic() + 120
        while any(job["status"] in ("queued", "running") for job in _jobs(client, cancelled_id)):
            assert time.monotonic() < deadline, f"children still active\n{server.log_tail()}"
            time.sleep(1.0)
        children = _jobs(client, cancelled_id)
        assert children and {job["status"] for job in children} == {"cancelled"}
        assert client.post(f"/v1/experiments/{cancelled_id}/cancel").status_code == 409
    with _client(server, _create_key(server, rarefit_cmd, "other")) as other:
        assert other.get(f"/v1/experiments/{experiment_id}").status_code == 404
        assert other.post(f"/v1/experiments/{experiment_id}/cancel").status_code == 404
        assert other.get(f"/v1/jobs/{jobs[0]['id']}").status_code == 404
        assert other.get("/v1/jobs", params={"experiment_id": experiment_id}).json()["items"] == []
