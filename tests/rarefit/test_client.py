"""``rarefit.client`` against a real server: typed results, one error type, waiting on the event stream or,
without it, by polling; jobs and experiments."""

from __future__ import annotations

import httpx
import live_api
import numpy as np
import pytest
from inference_artefacts import inference_support
from job_rows import add_model
from live_api import KEY

from rarefit.client import ApiError, Client
from rarefit.schemas import AliasOut, DatasetOut, ExperimentOut, ExperimentSummaryOut, JobOut, MetricsOut, ModelOut
from service.db import transaction
from service.model_card import SCORES_FILE
from service.models import Job, JobStatus
from service.operating_points import SplitScores, scores_npz
from service.repository import tenants

live_server, small_npz = live_api.live_server, live_api.small_npz  # the live API fixtures


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


GRID = {  # 2 trials x 1 seed, 1 epoch each
    "name": "loss types",
    "base": {"model": {"arch": "simple_cnn"}, "epochs": 1},
    "search": {"strategy": "grid", "space": {"loss.type": ["cross_entropy", "focal"]}},
    "seeds": [0],
    "budget": {"max_parallel": 2},
}


def test_an_experiment_round_trip_follows_its_stream_to_the_leaderboard(client, live_server, dataset_id):
    created = client.create_experiment({**GRID, "dataset_id": dataset_id})
    assert isinstance(created, ExperimentOut) and created.status == "queued"
    assert created.progress.trials_total == 2 and created.leaderboard == []
    live_server.play_experiment(created.id, epochs=1)
    seen = []
    finished = client.wait_experiment(created, progress=seen.append)
    assert [e.data["status"] for e in seen] == ["queued", "running", "succeeded"] and all(e.id > 0 for e in seen)
    assert finished.status == "succeeded" and finished.progress.trials_done == 2
    # The stand-in worker scores trial t 0.6 + 0.1 t on val, so trial 1 ranks first.
    assert [(row.rank, row.trial) for row in finished.leaderboard] == [(1, 1), (2, 0)]
    assert {row.params["loss.type"] for row in finished.leaderboard} == {"cross_entropy", "focal"}
    assert finished.leaderboard[0].val["objective"].per_seed == pytest.approx([0.7])
    assert finished.best is not None and finished.best.trial == 1
    assert client.get_experiment(created.id) == finished
    listed = client.list_experiments(status="succeeded")
    assert all(isinstance(item, ExperimentSummaryOut) for item in listed) and created.id in [e.id for e in listed]


def test_cancelling_an_experiment_and_its_problems(client, dataset_id):
    created = client.create_experiment({**GRID, "dataset_id": dataset_id})
    cancelled = client.cancel_experiment(created.id)
    assert cancelled.status == "cancelled" and cancelled.finished_at is not None
    assert client.wait_experiment(created.id).status == "cancelled"
    with pytest.raises(ApiError) as again:
        client.cancel_experiment(created.id)
    assert again.value.status == 409
    with pytest.raises(ApiError) as invalid:
        client.create_experiment({**GRID, "dataset_id": dataset_id, "seeds": [0, 0]})
    assert invalid.value.status == 422 and invalid.value.errors


class WithoutEventStreams(httpx.BaseTransport):
    """A proxy in front of the real server that does not pass event streams on, answering ``answer`` instead;
    it records each status the server answered the rest with."""

    def __init__(self, answer: httpx.Response) -> None:
        self._server, self._answer = httpx.HTTPTransport(), answer
        self.refused: list[str] = []
        self.answered: list[int] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/events"):
            self.refused.append(request.url.path)
            return httpx.Response(self._answer.status_code, headers=self._answer.headers, content=self._answer.content)
        response = self._server.handle_request(request)
        self.answered.append(response.status_code)
        return response

    def close(self) -> None:
        self._server.close()


REFUSALS = {
    "502 from the proxy": httpx.Response(502, json={"title": "Bad Gateway", "detail": "upstream closed"}),
    "404 from a router": httpx.Response(404, text="not found"),
    "a login page instead": httpx.Response(200, html="<html>sign in</html>"),
}


@pytest.mark.parametrize("answer", REFUSALS.values(), ids=REFUSALS.keys())
def test_wait_polls_when_the_event_stream_is_unavailable(live_server, dataset_id, answer):
    proxy = WithoutEventStreams(answer)
    with Client(live_server.url, KEY, transport=proxy) as client:
        job = client.submit_job({"dataset_id": dataset_id, "epochs": 2, "model": {"arch": "simple_cnn"}})
        live_server.play_worker(job.id, epochs=2, pause=0.5)
        seen = []
        finished = client.wait(job, progress=seen.append, poll_seconds=0.05)
    assert proxy.refused == [f"/v1/jobs/{job.id}/events"]
    assert finished.status == "succeeded" and finished.progress.epoch == 2
    assert [(e.id, e.event, e.data["epoch"]) for e in seen] == [(0, "epoch", 1), (0, "epoch", 2)]
    assert 304 in proxy.answered  # unchanged polls are answered Not Modified to the ETag


def test_wait_experiment_polls_when_the_event_stream_is_unavailable(live_server, dataset_id):
    proxy = WithoutEventStreams(REFUSALS["502 from the proxy"])
    with Client(live_server.url, KEY, transport=proxy) as client:
        created = client.create_experiment({**GRID, "dataset_id": dataset_id})
        live_server.play_experiment(created.id, epochs=1)
        seen = []
        finished = client.wait_experiment(created.id, progress=seen.append, poll_seconds=0.05)
    assert proxy.refused == [f"/v1/experiments/{created.id}/events"]
    assert finished.status == "succeeded" and [row.trial for row in finished.leaderboard] == [1, 0]
    assert seen[-1].data == {"experiment_id": created.id, "status": "succeeded", "trials_total": 2, "error": None}


@pytest.fixture(scope="module")
def model_id(live_server, dataset_id, tmp_path_factory) -> str:
    """A real exported binary model (8x8 grey) with stored val/test scores, registered as a succeeded job's."""
    support = inference_support()
    exported = support.export_net(
        tmp_path_factory.mktemp("model"), channels=1, height=8, width=8, class_names=["0", "1"], seed=5
    )
    rng = np.random.default_rng(0)
    scores = {}
    for split in ("val", "test"):  # positives (class 1) score higher, as a trained model's would
        labels = (rng.random(300) < 0.3).astype(np.int64)
        p1 = 1 / (1 + np.exp(-(rng.normal(size=300) * 1.5 + 2.5 * labels - 1.0)))
        scores[split] = SplitScores(np.stack([1 - p1, p1], axis=1), labels)
    store = live_server.app.state.blob_store
    with transaction(live_server.app.state.session_factory) as session:
        tenant_id = tenants.authenticate(session, plaintext=KEY).tenant_id
        job = Job(tenant_id=tenant_id, dataset_id=dataset_id, spec={}, epochs=1, status=JobStatus.succeeded)
        session.add(job)
        session.flush()
        prefix = f"jobs/{job.id}/artifacts"
        support.install(store, exported, prefix=prefix, threshold=0.5, positive_class=1)
        store.write(f"{prefix}/{SCORES_FILE}", scores_npz(scores))
        return add_model(session, job, class_names=["0", "1"], input_shape=[8, 8, 1], blob_prefix=prefix)


def test_models_operating_point_aliases_and_predict_by_alias(client, model_id):
    model = client.get_model(model_id)
    assert isinstance(model, ModelOut) and model.class_names == ["0", "1"] and model.revision == 0
    assert model_id in [m.id for m in client.list_models()]
    refitted = client.update_operating_point(model_id, threshold={"strategy": "precision_at_least", "value": 0.8})
    assert refitted.revision == 1 and [r.revision for r in refitted.history] == [0, 1]
    assert refitted.operating_point["policy"]["strategy"] == "precision_at_least"
    with pytest.raises(ApiError) as invalid:
        client.update_operating_point(model_id, threshold={"strategy": "precision_at_least", "value": 2})
    assert invalid.value.status == 422 and invalid.value.errors[0]["loc"][:2] == ["body", "threshold"]

    alias = client.set_alias("production", model_id=model_id)
    assert isinstance(alias, AliasOut) and alias.model_id == model_id
    assert client.get_alias("production") == alias and "production" in [a.alias for a in client.list_aliases()]
    image = inference_support().png_bytes(np.full((8, 8), 200, dtype=np.uint8))
    by_alias = client.predict_by_alias("production", [image, image])
    assert by_alias.model_id == model_id and len(by_alias.predictions) == 2
    assert by_alias.predictions[0].scores_version == 1  # the re-fitted operating point, at once
    overridden = client.predict(model_id, [image], threshold=0.99)
    assert overridden.predictions[0].decision["threshold"] == 0.99
    assert overridden.predictions[0].probabilities == pytest.approx(by_alias.predictions[0].probabilities)

    client.delete_alias("production")
    with pytest.raises(ApiError) as gone:
        client.predict_by_alias("production", [image])
    assert gone.value.status == 404 and "production" in gone.value.detail


def test_a_missing_key_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("RAREFIT_API_KEY", raising=False)
    with pytest.raises(ValueError, match="RAREFIT_API_KEY"):
        Client("http://127.0.0.1:1")
