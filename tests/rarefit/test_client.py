"""``rarefit.client`` against a real server: typed results, one error type, waiting on the event stream."""

from __future__ import annotations

import pytest
from live_api import KEY

from rarefit.client import ApiError, Client
from service.schemas import DatasetOut, JobOut, MetricsOut


@pytest.fixture
def client(live_server):
    with Client(live_server.url, KEY, timeout=30) as rf:
        yield rf


@pytest.fixture(scope="module")
def dataset_id(live_server, small_npz) -> str:
    with Client(live_server.url, KEY) as rf:
        return rf.upload_dataset(small_npz, name="small").id


def test_results_are_the_apis_schemas(client, small_npz, dataset_id):
    dataset = client.get_dataset(dataset_id)
    assert isinstance(dataset, DatasetOut) and dataset.name == "small" and dataset.num_classes == 2
    assert dataset_id in [d.id for d in client.list_datasets()]
    job = client.submit_job({"dataset_id": dataset_id, "epochs": 2, "model": {"arch": "simple_cnn"}})
    assert isinstance(job, JobOut) and job.status == "queued" and job.progress.epochs == 2
    assert client.get_job(job.id).id == job.id and job.id in [j.id for j in client.list_jobs(status="queued")]
    assert client.cancel_job(job.id).status == "cancelled"


def test_problems_raise_one_exception_type_with_status_title_detail_errors(client, live_server, dataset_id):
    with pytest.raises(ApiError) as invalid:
        client.submit_job({"dataset_id": dataset_id, "epochs": -1})
    assert invalid.value.status == 422 and invalid.value.errors
    assert invalid.value.errors[0]["loc"][-1] == "epochs"
    with pytest.raises(ApiError) as missing:
        client.get_job("0" * 32)
    assert (missing.value.status, missing.value.title) == (404, "Not Found") and "0" * 32 in missing.value.detail
    with Client(live_server.url, "rf_wrong-key-0123456789abcdef") as stranger, pytest.raises(ApiError) as denied:
        stranger.list_jobs()
    assert denied.value.status == 401


def test_wait_follows_the_stream_and_sees_every_epoch_once(client, live_server, dataset_id):
    job = client.submit_job({"dataset_id": dataset_id, "epochs": 3})
    live_server.play_worker(job.id, epochs=3)
    seen = []
    finished = client.wait(job, progress=seen.append)
    assert finished.status == "succeeded" and finished.progress.epoch == 3
    assert [e.data["epoch"] for e in seen if e.event == "epoch"] == [1, 2, 3]
    assert [e.data["status"] for e in seen if e.event == "status"] == ["queued", "running", "succeeded"]
    metrics = client.metrics(job.id, since_epoch=1)
    assert isinstance(metrics, MetricsOut) and [h.epoch for h in metrics.history] == [2, 3]


def test_submit_with_wait_returns_a_failed_job_with_its_error(client, live_server, dataset_id):
    job = client.submit_job({"dataset_id": dataset_id, "epochs": 2})
    live_server.play_worker(job.id, epochs=1, status="failed")
    finished = client.wait(job.id)
    assert finished.status == "failed" and finished.error.message == "the loss became NaN"


def test_a_missing_key_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("RAREFIT_API_KEY", raising=False)
    with pytest.raises(ValueError, match="RAREFIT_API_KEY"):
        Client("http://127.0.0.1:1")
