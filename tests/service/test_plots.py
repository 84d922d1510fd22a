"""Plots as PNG: drawn from what the job recorded, 404 naming what is missing."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from rarefit.calibration import reliability, softmax_at
from service.plots import PLOTS
from workers.training.metrics import metric_block

PNG = b"\x89PNG\r\n\x1a\n"


def _test_block(*, calibrated: bool) -> dict:
    """A binary job's test block as the worker records it: the core's metric block and calibration bins."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, size=200)
    logits = rng.normal(size=(200, 2)) + 1.5 * np.eye(2)[labels]
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    block = metric_block(probs, labels, class_names=["c0", "c1"])
    before = reliability(probs, labels)
    after = reliability(softmax_at(np.log(probs), 1.5 if calibrated else 1.0), labels)
    block["calibration"] = {
        "method": "temperature" if calibrated else "none",
        "temperature": 1.5 if calibrated else 1.0,
        "ece_before": before["ece"],
        "ece_after": after["ece"],
        "reliability_before": before["bins"],
        "reliability_after": after["bins"],
    }
    return json.loads(json.dumps(block))


def _finished_job(api_client, headers, new_dataset, complete_job, api_db, *, calibrated: bool) -> str:
    from service.db import transaction
    from service.models import Job

    job_id = api_client.post("/v1/jobs", json={"dataset_id": new_dataset(headers)}, headers=headers).json()["id"]
    complete_job(job_id)
    with transaction(api_db) as session:
        session.get(Job, job_id).test_metrics = _test_block(calibrated=calibrated)
    return job_id


def test_a_finished_jobs_plots_are_pngs(api_client, alpha, new_dataset, complete_job, api_db):
    job_id = _finished_job(api_client, alpha, new_dataset, complete_job, api_db, calibrated=True)
    for name in PLOTS:
        response = api_client.get(f"/v1/jobs/{job_id}/plots/{name}.png", headers=alpha)
        assert response.status_code == 200 and response.headers["content-type"] == "image/png", (name, response.text)
        assert response.content.startswith(PNG) and Image.open(io.BytesIO(response.content)).size == (640, 400)


def test_an_uncalibrated_job_has_no_reliability_plot(api_client, alpha, new_dataset, complete_job, api_db):
    job_id = _finished_job(api_client, alpha, new_dataset, complete_job, api_db, calibrated=False)
    assert api_client.get(f"/v1/jobs/{job_id}/plots/roc_curve.png", headers=alpha).status_code == 200
    response = api_client.get(f"/v1/jobs/{job_id}/plots/reliability.png", headers=alpha)
    assert response.status_code == 404 and response.headers["content-type"] == "application/problem+json"
    assert "no calibration data (calibration.method none" in response.json()["detail"]


@pytest.mark.parametrize(
    ("name", "says"),
    [
        ("pr_curve", "PR curve"),
        ("confusion_matrix", "confusion matrix"),
        ("roc_curve", "ROC curve"),
        ("reliability", "calibration"),
        ("nope", "available"),
    ],
)
def test_a_plot_without_its_data_is_a_404_saying_why(api_client, alpha, new_dataset, name, says):
    job_id = api_client.post("/v1/jobs", json={"dataset_id": new_dataset(alpha)}, headers=alpha).json()["id"]
    response = api_client.get(f"/v1/jobs/{job_id}/plots/{name}.png", headers=alpha)
    assert response.status_code == 404 and says in response.json()["detail"]


def test_another_tenants_plot_is_404(api_client, alpha, beta, new_dataset):
    job_id = api_client.post("/v1/jobs", json={"dataset_id": new_dataset(alpha)}, headers=alpha).json()["id"]
    assert api_client.get(f"/v1/jobs/{job_id}/plots/training_curves.png", headers=beta).status_code == 404
