"""POST /v1/models/{id}/predict through the real app: SQLite, real keys, a real exported model."""

from __future__ import annotations

import base64
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from job_rows import add_model
from sqlalchemy.orm import Session, sessionmaker

from service.config import Settings
from service.db import transaction
from service.models import Job, JobStatus, Model
from service.repository import tenants

PROBLEM = "application/problem+json"
LIMIT = 4
MAX_BODY = 64 * 1024


@pytest.fixture
def api_settings(sqlite_settings: Callable[..., Settings], _migrated_template: Path) -> Settings:
    """The shared app settings with small limits (overrides tests/service/conftest.py)."""
    settings = sqlite_settings(max_predict_instances=LIMIT, max_upload_bytes=MAX_BODY)
    shutil.copyfile(_migrated_template, settings.data_dir / "rarefit.db")
    return settings


def register_model(
    factory: sessionmaker[Session],
    *,
    tenant_id: str,
    dataset_id: str,
    prefix_of,
    exported,
    threshold: float | None = None,
    positive_class: int | None = None,
) -> str:
    """What the worker does for a succeeded job: the artefact in the blob store, then the rows."""
    with transaction(factory) as session:
        job = Job(tenant_id=tenant_id, dataset_id=dataset_id, spec={}, epochs=1, status=JobStatus.succeeded)
        session.add(job)
        session.flush()
        prefix = prefix_of(job.id)
        return add_model(
            session,
            job,
            class_names=exported.class_names,
            input_shape=[exported.height, exported.width, exported.channels],
            blob_prefix=prefix,
            threshold=threshold,
            positive_class=positive_class,
        )


@pytest.fixture
def grey_model(api_client, api_db, alpha, new_dataset, binary_grey, helpers) -> str:
    store = api_client.app.state.blob_store

    def prefix_of(job_id: str) -> str:
        prefix = f"jobs/{job_id}/artifacts"
        helpers.install(store, binary_grey, prefix=prefix, threshold=0.3, positive_class=1)  # read by predict
        return prefix

    plaintext = alpha["Authorization"].removeprefix("Bearer ")
    with api_db() as session:
        tenant_id = tenants.authenticate(session, plaintext=plaintext).tenant_id
    return register_model(
        api_db,
        tenant_id=tenant_id,
        dataset_id=new_dataset(alpha),
        prefix_of=prefix_of,
        exported=binary_grey,
        threshold=0.3,
        positive_class=1,
    )


def pngs(helpers, count: int, seed: int = 0) -> tuple[list, list[bytes]]:
    arrays = helpers.images(count, height=12, width=10, channels=1, seed=seed)
    return arrays, [helpers.png(a) for a in arrays]


def url(model_id: str) -> str:
    return f"/v1/models/{model_id}/predict"


def test_multipart_predictions_follow_the_model_and_its_threshold(
    api_client, alpha, grey_model, binary_grey, helpers
) -> None:
    arrays, payloads = pngs(helpers, 3)
    files = [("files", (f"img{i}.png", data, "image/png")) for i, data in enumerate(payloads)]
    response = api_client.post(url(grey_model), headers=alpha, files=files)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model_id"] == grey_model
    expected = helpers.eager(binary_grey, arrays)
    for prediction, probs in zip(body["predictions"], expected, strict=True):
        got = torch.tensor(
            [prediction["probabilities"]["normal"], prediction["probabilities"]["pneumonia"]], dtype=torch.float64
        )
        assert torch.allclose(got, probs, atol=1e-5)
        assert abs(float(got.sum()) - 1.0) < 1e-9
        index = 1 if float(probs[1]) >= 0.3 else 0  # the card's tuned threshold, positive class 1
        assert (prediction["class_index"], prediction["label"]) == (index, binary_grey.class_names[index])
        assert prediction["decision"]["threshold"] == 0.3 and prediction["scores_version"] == 0
        assert prediction["decision"]["margin"] == pytest.approx(float(probs[1]) - 0.3, abs=1e-5)


def test_json_base64_answers_the_same_as_multipart(api_client, alpha, grey_model, helpers) -> None:
    _, payloads = pngs(helpers, 2, seed=4)
    as_json = api_client.post(
        url(grey_model), headers=alpha, json={"instances": [{"b64": base64.b64encode(p).decode()} for p in payloads]}
    )
    as_files = api_client.post(
        url(grey_model), headers=alpha, files=[("files", ("x.png", p, "image/png")) for p in payloads]
    )
    assert as_json.status_code == 200, as_json.text
    assert as_json.json() == as_files.json()


def test_another_tenants_model_and_unknown_ids_answer_404(api_client, beta, alpha, grey_model, helpers) -> None:
    _, payloads = pngs(helpers, 1)
    body = {"instances": [{"b64": base64.b64encode(payloads[0]).decode()}]}
    for headers, model_id in ((beta, grey_model), (alpha, "0" * 32)):
        response = api_client.post(url(model_id), headers=headers, json=body)
        assert response.status_code == 404
        assert response.headers["content-type"] == PROBLEM
        assert "not found" in response.json()["detail"]


def test_a_missing_key_answers_401(api_client, grey_model) -> None:
    assert api_client.post(url(grey_model), json={"instances": []}).status_code == 401


def test_other_media_types_answer_415(api_client, alpha, grey_model) -> None:
    response = api_client.post(url(grey_model), headers={**alpha, "content-type": "text/plain"}, content=b"hi")
    assert response.status_code == 415
    assert response.headers["content-type"] == PROBLEM
    assert "multipart/form-data" in response.json()["detail"]


def test_an_undecodable_file_answers_422_naming_it(api_client, alpha, grey_model, helpers) -> None:
    _, payloads = pngs(helpers, 1)
    files = [("files", ("good.png", payloads[0], "image/png")), ("files", ("x.png", b"\x00junk", "image/png"))]
    response = api_client.post(url(grey_model), headers=alpha, files=files)
    assert response.status_code == 422
    problem = response.json()
    assert problem["detail"].startswith("instance 1 (file 'x.png'): not a readable image")
    assert problem["errors"][0]["loc"] == ["body", "files", 1]


def test_bad_base64_answers_422_naming_the_instance(api_client, alpha, grey_model, helpers) -> None:
    _, payloads = pngs(helpers, 1)
    body = {"instances": [{"b64": base64.b64encode(payloads[0]).decode()}, {"b64": "!!not base64!!"}]}
    response = api_client.post(url(grey_model), headers=alpha, json=body)
    assert response.status_code == 422
    assert response.json()["detail"].startswith("instance 1: invalid base64")
    assert response.json()["errors"][0]["loc"] == ["body", "instances", 1, "b64"]


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"instances": []}, "no instances"),
        ({"instances": [{"b64": "AA==", "extra": 1}]}, "instances.0.extra"),
        ({"images": []}, "instances"),
        ({"instances": [{"b64": 5}]}, "instances.0.b64"),
    ],
)
def test_malformed_json_answers_422(api_client, alpha, grey_model, body, fragment) -> None:
    response = api_client.post(url(grey_model), headers=alpha, json=body)
    assert response.status_code == 422
    assert response.headers["content-type"] == PROBLEM
    assert fragment in response.json()["detail"]


def test_invalid_json_answers_422(api_client, alpha, grey_model) -> None:
    response = api_client.post(
        url(grey_model), headers={**alpha, "content-type": "application/json"}, content=b"{not json"
    )
    assert response.status_code == 422


def test_unknown_form_fields_answer_422(api_client, alpha, grey_model, helpers) -> None:
    _, payloads = pngs(helpers, 1)
    response = api_client.post(
        url(grey_model), headers=alpha, data={"note": "hi"}, files=[("files", ("a.png", payloads[0], "image/png"))]
    )
    assert response.status_code == 422
    assert "note" in response.json()["detail"]


@pytest.mark.parametrize("count", [LIMIT + 1, LIMIT + 3])
def test_more_instances_than_the_limit_answer_422_naming_it(api_client, alpha, grey_model, helpers, count) -> None:
    _, payloads = pngs(helpers, 1)
    encoded = base64.b64encode(payloads[0]).decode()
    as_json = api_client.post(url(grey_model), headers=alpha, json={"instances": [{"b64": encoded}] * count})
    as_files = api_client.post(
        url(grey_model), headers=alpha, files=[("files", (f"{i}.png", payloads[0], "image/png")) for i in range(count)]
    )
    for response in (as_json, as_files):
        assert response.status_code == 422
        assert f"the limit is {LIMIT}" in response.json()["detail"]


def test_a_body_over_the_upload_limit_answers_413(api_client, alpha, grey_model) -> None:
    big = {"instances": [{"b64": "A" * MAX_BODY}]}
    response = api_client.post(url(grey_model), headers=alpha, json=big)
    assert response.status_code == 413
    assert str(MAX_BODY) in response.json()["detail"]


def test_a_broken_artefact_answers_503_not_500(api_client, alpha, grey_model) -> None:
    store = api_client.app.state.blob_store
    with api_client.app.state.session_factory() as session:
        prefix = session.get(Model, grey_model).blob_prefix
    store.write(f"{prefix}/model_card.json", b"{broken")
    response = api_client.post(url(grey_model), headers=alpha, json={"instances": [{"b64": "AA=="}]})
    assert response.status_code == 503
    assert response.headers["content-type"] == PROBLEM


def test_openapi_documents_both_request_forms(api_client) -> None:
    operation = api_client.get("/openapi.json").json()["paths"]["/v1/models/{model_id}/predict"]["post"]
    content = operation["requestBody"]["content"]
    assert set(content) == {"multipart/form-data", "application/json"}
    assert content["multipart/form-data"]["schema"]["properties"]["files"]["items"]["format"] == "binary"
    assert "examples" in content["application/json"]
    assert {"200", "400", "404", "413", "415", "422", "503"} <= set(operation["responses"])
