"""Plots as PNG: drawn from what the job recorded, 404 naming what is missing."""

from __future__ import annotations

import io

import pytest
from PIL import Image

PNG = b"\x89PNG\r\n\x1a\n"


def test_a_finished_jobs_plots_are_pngs(api_client, alpha, new_dataset, complete_job, api_db):
    from service.db import transaction
    from service.models import Job

    job_id = api_client.post("/v1/jobs", json={"dataset_id": new_dataset(alpha)}, headers=alpha).json()["id"]
    complete_job(job_id)
    with transaction(api_db) as session:  # what a binary job's test block holds
        session.get(Job, job_id).test_metrics = {
            "confusion_matrix": [[8, 2], [1, 9]],
            "per_class": [{"class": "c0"}, {"class": "c1"}],
            "pr_curve": [
                {"recall": 1.0, "precision": 0.5, "threshold": 0.1},
                {"recall": 0.5, "precision": 0.9, "threshold": 0.8},
            ],
        }
    for name in ("training_curves", "pr_curve", "confusion_matrix"):
        response = api_client.get(f"/v1/jobs/{job_id}/plots/{name}.png", headers=alpha)
        assert response.status_code == 200 and response.headers["content-type"] == "image/png", response.text
        assert response.content.startswith(PNG) and Image.open(io.BytesIO(response.content)).size == (640, 400)


@pytest.mark.parametrize(
    ("name", "says"),
    [("pr_curve", "PR curve"), ("confusion_matrix", "confusion matrix"), ("roc_curve", "ROC"), ("nope", "available")],
)
def test_a_plot_without_its_data_is_a_404_saying_why(api_client, alpha, new_dataset, name, says):
    job_id = api_client.post("/v1/jobs", json={"dataset_id": new_dataset(alpha)}, headers=alpha).json()["id"]
    response = api_client.get(f"/v1/jobs/{job_id}/plots/{name}.png", headers=alpha)
    assert response.status_code == 404 and says in response.json()["detail"]


def test_another_tenants_plot_is_404(api_client, alpha, beta, new_dataset):
    job_id = api_client.post("/v1/jobs", json={"dataset_id": new_dataset(alpha)}, headers=alpha).json()["id"]
    assert api_client.get(f"/v1/jobs/{job_id}/plots/training_curves.png", headers=beta).status_code == 404
