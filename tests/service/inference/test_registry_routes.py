"""The model registry over HTTP (real app, SQLite, real exported model): PATCH re-fits the operating
point on the stored scores, aliases route predict, deletes are guarded, other tenants get 404."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest
from job_rows import add_model as add_model_row
from sqlalchemy import event
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from service.db import transaction
from service.model_card import SCORES_FILE, card_key
from service.models import Job, JobStatus, Model
from service.operating_points import SplitScores, scores_npz
from service.repository import tenants


def synthetic_scores(seed: int, n: int = 400) -> dict[str, SplitScores]:
    """Binary val/test scores where positives (class 1) score higher, as a trained model's would."""
    rng = np.random.default_rng(seed)
    out = {}
    for split in ("val", "test"):
        labels = (rng.random(n) < 0.3).astype(np.int64)
        p1 = 1 / (1 + np.exp(-(rng.normal(size=n) * 1.5 + 2.5 * labels - 1.0)))
        out[split] = SplitScores(np.stack([1 - p1, p1], axis=1), labels)
    return out


def add_model(factory: sessionmaker[Session], store, *, headers, dataset_id, exported, helpers, scores=True) -> str:
    plaintext = headers["Authorization"].removeprefix("Bearer ")
    with transaction(factory) as session:
        tenant_id = tenants.authenticate(session, plaintext=plaintext).tenant_id
        job = Job(tenant_id=tenant_id, dataset_id=dataset_id, spec={}, epochs=1, status=JobStatus.succeeded)
        session.add(job)
        session.flush()
        prefix = f"jobs/{job.id}/artifacts"
        binary = len(exported.class_names) == 2
        helpers.install(store, exported, prefix=prefix, threshold=0.3 if binary else None, positive_class=1)
        if scores and binary:
            store.write(f"{prefix}/{SCORES_FILE}", scores_npz(synthetic_scores(0)))
        return add_model_row(
            session,
            job,
            class_names=exported.class_names,
            input_shape=[exported.height, exported.width, exported.channels],
            blob_prefix=prefix,
        )


@pytest.fixture
def models(api_client, api_db, alpha, new_dataset, binary_grey, three_rgb, helpers):
    store = api_client.app.state.blob_store
    dataset = new_dataset(alpha)

    def make(exported=binary_grey, **kwargs) -> str:
        return add_model(api_db, store, headers=alpha, dataset_id=dataset, exported=exported, helpers=helpers, **kwargs)

    return make


def predict(api_client, headers, path: str, payloads: list[bytes], **extra):
    body = {"instances": [{"b64": base64.b64encode(p).decode()} for p in payloads], **extra}
    return api_client.post(path, headers=headers, json=body)


def test_patch_refits_on_stored_scores_and_predict_follows_it(api_client, alpha, models, binary_grey, helpers):
    model_id = models()
    arrays = helpers.images(12, height=12, width=10, channels=1, seed=3)
    payloads = [helpers.png(a) for a in arrays]
    before = predict(api_client, alpha, f"/v1/models/{model_id}/predict", payloads).json()["predictions"]
    assert {p["decision"]["threshold"] for p in before} == {0.3} and {p["scores_version"] for p in before} == {0}

    policy = {"strategy": "precision_at_least", "value": 0.9, "class": "pneumonia", "guarantee": True}
    answer = api_client.patch(f"/v1/models/{model_id}", headers=alpha, json={"threshold": policy})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    threshold = body["operating_point"]["thresholds"]["1"]
    assert body["revision"] == 1 and threshold != 0.3 and body["threshold"] == threshold
    assert [h["revision"] for h in body["history"]] == [0, 1]
    assert body["history"][0]["operating_point"]["thresholds"] == {"1": 0.3}  # the previous one is kept
    test_block = body["history"][1]["metrics"]
    rare = test_block["per_class"][1]
    # Oracle: the test confusion at that threshold, recomputed here.
    test = synthetic_scores(0)["test"]
    predicted = test.probs[:, 1] >= threshold
    tp = int((predicted & (test.labels == 1)).sum())
    assert rare["precision"] == pytest.approx(tp / predicted.sum()) and 0 <= rare["precision_lower_bound"] <= 1
    assert rare["recall"] == pytest.approx(tp / (test.labels == 1).sum())

    after = predict(api_client, alpha, f"/v1/models/{model_id}/predict", payloads).json()["predictions"]
    expected = helpers.eager(binary_grey, arrays)[:, 1]
    assert [p["class_index"] for p in after] == [int(float(p) >= threshold) for p in expected]
    assert {p["scores_version"] for p in after} == {1} and {p["decision"]["threshold"] for p in after} == {threshold}
    assert api_client.get(f"/v1/models/{model_id}", headers=alpha).json()["revision"] == 1


def test_a_failed_commit_leaves_the_card_and_the_row_as_they_were(api_client, api_db, alpha, models, helpers):
    model_id = models()
    store = api_client.app.state.blob_store
    with api_db() as session:
        prefix = session.get(Model, model_id).blob_prefix

    def card(revision: int) -> bytes:
        with store.open_read(card_key(prefix, revision=revision)) as handle:
            return handle.read()

    trained, before = card(0), api_client.get(f"/v1/models/{model_id}", headers=alpha).json()
    payloads = [helpers.png(a) for a in helpers.images(4, height=12, width=10, channels=1, seed=7)]
    policy = {"threshold": {"strategy": "precision_at_least", "value": 0.9, "class": "pneumonia"}}

    def connection_lost(_session) -> None:  # the database goes away at the commit, after every write was sent
        raise OperationalError("COMMIT", {}, ConnectionResetError("server closed the connection"))

    event.listen(api_db, "before_commit", connection_lost)
    try:
        answer = api_client.patch(f"/v1/models/{model_id}", headers=alpha, json=policy)
    finally:
        event.remove(api_db, "before_commit", connection_lost)
    assert answer.status_code == 503, answer.text
    assert api_client.get(f"/v1/models/{model_id}", headers=alpha).json() == before  # revision 0, no history
    assert card(0) == trained  # the card predict serves is untouched
    served = predict(api_client, alpha, f"/v1/models/{model_id}/predict", payloads).json()["predictions"]
    assert {(p["scores_version"], p["decision"]["threshold"]) for p in served} == {(0, 0.3)}

    retried = api_client.patch(f"/v1/models/{model_id}", headers=alpha, json=policy)  # no conflict with a ghost
    assert retried.status_code == 200 and retried.json()["revision"] == 1, retried.text
    assert [h["revision"] for h in retried.json()["history"]] == [0, 1]
    assert json.loads(card(1))["revision"] == 1 and card(0) == trained
    job_artifacts = api_client.get(f"/v1/jobs/{before['source_job_id']}/artifacts", headers=alpha).json()
    assert {a["name"]: a["size"] for a in job_artifacts}["model_card.json"] == len(card(1))  # download follows the row


def test_a_per_request_threshold_overrides_the_card(api_client, alpha, models, binary_grey, three_rgb, helpers):
    model_id = models()
    arrays = helpers.images(8, height=12, width=10, channels=1, seed=4)
    payloads = [helpers.png(a) for a in arrays]
    answer = predict(api_client, alpha, f"/v1/models/{model_id}/predict", payloads, threshold=0.0)
    assert answer.status_code == 200, answer.text
    assert {p["class_index"] for p in answer.json()["predictions"]} == {1}  # everything reaches 0
    assert all(p["decision"]["overridden"] for p in answer.json()["predictions"])
    files = [("files", ("a.png", payloads[0], "image/png"))]
    form = api_client.post(f"/v1/models/{model_id}/predict", headers=alpha, files=files, data={"threshold": "1.5"})
    assert form.status_code == 422 and form.json()["errors"][0]["loc"] == ["body", "threshold"]
    multi = models(three_rgb)
    rgb = [helpers.png(a) for a in helpers.images(1, height=8, width=8, channels=3, seed=0)]
    refused = predict(api_client, alpha, f"/v1/models/{multi}/predict", rgb, threshold=0.5)
    assert refused.status_code == 422 and "binary model" in refused.json()["detail"]


def test_patch_problems(api_client, alpha, models):
    without_scores = models(scores=False)
    answer = api_client.patch(f"/v1/models/{without_scores}", headers=alpha, json={"threshold": {"strategy": "none"}})
    assert answer.status_code == 409 and "scores.npz" in answer.json()["detail"]
    model_id = models()
    bad_class = {"strategy": "recall_at_least", "value": 0.9, "class": "cat"}
    answer = api_client.patch(f"/v1/models/{model_id}", headers=alpha, json={"threshold": bad_class})
    assert answer.status_code == 422 and answer.json()["errors"][0]["loc"] == ["body", "threshold", "class"]
    answer = api_client.patch(f"/v1/models/{model_id}", headers=alpha, json={"threshold": {"strategy": "cost"}})
    assert answer.status_code == 422
    answer = api_client.patch(
        f"/v1/models/{model_id}", headers=alpha, json={"threshold": {"strategy": "cost", "cost": [[0, 1]]}}
    )
    assert answer.status_code == 422 and "2×2" in answer.json()["detail"]


def test_aliases_route_predict_and_guard_deletes(api_client, alpha, models, helpers):
    first, second = models(), models()
    payloads = [helpers.png(helpers.images(1, height=12, width=10, channels=1, seed=5)[0])]
    assert api_client.put("/v1/models/aliases/production", headers=alpha, json={"model_id": first}).status_code == 200
    routed = predict(api_client, alpha, "/v1/models/by-alias/production/predict", payloads)
    assert routed.status_code == 200 and routed.json()["model_id"] == first
    moved = api_client.put("/v1/models/aliases/production", headers=alpha, json={"model_id": second})
    assert moved.json()["model_id"] == second
    assert predict(api_client, alpha, "/v1/models/by-alias/production/predict", payloads).json()["model_id"] == second
    assert api_client.get("/v1/models/aliases/production", headers=alpha).json()["model_id"] == second
    assert [a["alias"] for a in api_client.get("/v1/models/aliases", headers=alpha).json()] == ["production"]
    assert api_client.delete(f"/v1/models/{second}", headers=alpha).status_code == 409
    assert api_client.delete(f"/v1/models/{first}", headers=alpha).status_code == 204
    assert api_client.get(f"/v1/models/{first}", headers=alpha).status_code == 404
    assert api_client.delete("/v1/models/aliases/production", headers=alpha).status_code == 204
    assert api_client.get("/v1/models/aliases/production", headers=alpha).status_code == 404
    assert api_client.delete(f"/v1/models/{second}", headers=alpha).status_code == 204
    bad = api_client.put("/v1/models/aliases/no%20spaces", headers=alpha, json={"model_id": first})
    assert bad.status_code == 422


def test_another_tenant_gets_404_everywhere(api_client, alpha, beta, models, helpers):
    model_id = models()
    api_client.put("/v1/models/aliases/production", headers=alpha, json={"model_id": model_id})
    payloads = [helpers.png(helpers.images(1, height=12, width=10, channels=1, seed=6)[0])]
    policy = {"threshold": {"strategy": "max_f1"}}
    assert api_client.get(f"/v1/models/{model_id}", headers=beta).status_code == 404
    assert api_client.patch(f"/v1/models/{model_id}", headers=beta, json=policy).status_code == 404
    assert api_client.delete(f"/v1/models/{model_id}", headers=beta).status_code == 404
    assert api_client.get("/v1/models/aliases/production", headers=beta).status_code == 404
    assert api_client.delete("/v1/models/aliases/production", headers=beta).status_code == 404
    assert api_client.put("/v1/models/aliases/mine", headers=beta, json={"model_id": model_id}).status_code == 404
    assert predict(api_client, beta, "/v1/models/by-alias/production/predict", payloads).status_code == 404
    assert api_client.get("/v1/models/aliases", headers=beta).json() == []
