"""The few rarefit API calls the HTTP benchmarks need, over a real connection (``httpx.Client``)."""

from __future__ import annotations

import io
import time
from datetime import datetime, timezone
from typing import Any

import httpx
import numpy as np

from benchmarks import common

TERMINAL = ("succeeded", "failed", "cancelled")


def client(base_url: str, api_key: str) -> httpx.Client:
    return httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {api_key}"}, timeout=120.0)


def npz_bytes(arrays: common.Arrays) -> bytes:
    """``arrays`` as a MedMNIST-layout ``.npz`` (grey images as ``(N, H, W)``, labels ``(N, 1)``)."""
    payload: dict[str, np.ndarray] = {}
    for split, (images, labels) in arrays.items():
        payload[f"{split}_images"] = images[..., 0] if images.shape[-1] == 1 else images
        payload[f"{split}_labels"] = labels.reshape(-1, 1).astype(np.uint8)
    buffer = io.BytesIO()
    np.savez(buffer, **payload)
    return buffer.getvalue()


def upload_dataset(http: httpx.Client, arrays: common.Arrays, *, name: str) -> dict[str, Any]:
    response = http.post(
        "/v1/datasets",
        files={"file": (f"{name}.npz", npz_bytes(arrays), "application/octet-stream")},
        data={"name": name},
    )
    _expect(response, 201, "upload the dataset")
    return response.json()


def submit_job(http: httpx.Client, spec: dict[str, Any]) -> tuple[dict[str, Any], datetime]:
    """POST the spec; the job and the client's UTC clock just before sending."""
    sent_at = datetime.now(timezone.utc)
    response = http.post("/v1/jobs", json=spec)
    _expect(response, 202, "submit the job")
    return response.json(), sent_at


def wait_job(http: httpx.Client, job_id: str, *, timeout: float, poll: float = 0.2) -> dict[str, Any]:
    """Poll until the job is terminal; raises unless it succeeded."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        response = http.get(f"/v1/jobs/{job_id}")
        _expect(response, 200, "read the job")
        job = response.json()
        if job["status"] in TERMINAL:
            if job["status"] != "succeeded":
                raise RuntimeError(f"job {job_id} ended {job['status']}: {job.get('error')}")
            return job
        time.sleep(poll)
    raise TimeoutError(f"job {job_id} not finished after {timeout:.0f} s")


def model(http: httpx.Client, model_id: str) -> dict[str, Any]:
    response = http.get(f"/v1/models/{model_id}")
    _expect(response, 200, "read the model")
    return response.json()


def download_artifact(http: httpx.Client, job_id: str, name: str) -> bytes:
    response = http.get(f"/v1/jobs/{job_id}/artifacts/{name}")
    _expect(response, 200, f"download {name}")
    return response.content


def parse_time(value: str | None) -> datetime | None:
    if value is None:
        return None
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def _expect(response: httpx.Response, status: int, what: str) -> None:
    if response.status_code != status:
        raise RuntimeError(f"could not {what}: HTTP {response.status_code} {response.text[:500]}")
