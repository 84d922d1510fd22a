"""Walk every object route the app has: another tenant's id answers 404, never the object.

The routes come from ``app.routes`` itself (every path with a ``{parameter}``),
so a new object endpoint is walked as soon as it exists; a path parameter this
test cannot fill fails it until the mapping below learns the new name. Tenant
alpha owns a real uploaded dataset, a finished job with a stored artefact, its
registered model and a queued job; beta calls each route with alpha's ids.
"""

from __future__ import annotations

import io
import re

import numpy as np
import pytest
from starlette.routing import Route

from service.db import transaction
from service.repository import tenants, webhooks

PROBLEM = "application/problem+json"
_PARAMETER = re.compile(r"{(\w+)(?::\w+)?}")


@pytest.fixture
def alpha_objects(api_client, alpha, complete_job, api_db) -> dict[str, str]:
    """Alpha's ids, by the path parameter name that takes them."""
    buffer = io.BytesIO()
    labels = np.array([0] * 16 + [1] * 8, dtype=np.uint8)
    images = np.random.default_rng(0).integers(0, 256, (labels.size, 6, 6), dtype=np.uint8)
    np.savez_compressed(buffer, train_images=images, train_labels=labels)
    upload = api_client.post("/v1/datasets", headers=alpha, files={"file": ("alpha.npz", buffer.getvalue())})
    assert upload.status_code == 201, upload.text
    dataset_id = upload.json()["id"]
    done = api_client.post("/v1/jobs", headers=alpha, json={"dataset_id": dataset_id, "epochs": 2}).json()["id"]
    model_id = complete_job(done)
    alias = api_client.put("/v1/models/aliases/production", headers=alpha, json={"model_id": model_id})
    assert alias.status_code == 200, alias.text
    queued = api_client.post(
        "/v1/jobs", headers={**alpha, "Idempotency-Key": "shared-key"}, json={"dataset_id": dataset_id}
    ).json()["id"]
    search = {"strategy": "grid", "space": {"loss.type": ["cross_entropy", "focal"]}}
    experiment = api_client.post(
        "/v1/experiments", headers=alpha, json={"dataset_id": dataset_id, "search": search, "seeds": [0]}
    )
    assert experiment.status_code == 202, experiment.text
    # Finished, so its event stream ends after the replay instead of following a live experiment.
    assert api_client.post(f"/v1/experiments/{experiment.json()['id']}/cancel", headers=alpha).status_code == 202
    with transaction(api_db) as session:  # stored directly: the target check would need DNS
        key = tenants.authenticate(session, plaintext=alpha["Authorization"].removeprefix("Bearer "))
        webhook = webhooks.create_webhook(
            session,
            tenant_id=key.tenant_id,
            url="https://hooks.example.com/rarefit",
            event_types=["job.succeeded"],
            secret="whsec_test",
        ).id
    return {
        "dataset_id": dataset_id,
        "experiment_id": experiment.json()["id"],
        "webhook_id": webhook,
        "job_id": done,
        "queued_job_id": queued,
        "model_id": model_id,
        "name": "metrics.json",
        "alias": "production",
        "plot": "training_curves",
    }


def _flat_routes(app) -> list:
    try:
        from fastapi.routing import iter_route_contexts
    except ImportError:  # FastAPI before nested include contexts: app.routes is already flat
        return [route for route in app.routes if isinstance(route, Route)]
    return list(iter_route_contexts(app.routes))


def object_routes(app) -> list[tuple[str, str]]:
    """(method, path template) of every route whose path names an object."""
    found = []
    for route in _flat_routes(app):
        path, methods = getattr(route, "path", None), getattr(route, "methods", None)
        if path and "{" in path:
            found += [(method, path) for method in sorted(methods or ()) if method != "HEAD"]
    return sorted(found)


def fill(template: str, ids: dict[str, str], *, method: str) -> str:
    def one(match: re.Match) -> str:
        name = match.group(1)
        if name not in ids:
            pytest.fail(f"{method} {template}: no id for path parameter {name!r}; teach this test the new route")
        # A state change is tried on the job that could still change (cancel a queued job).
        return ids["queued_job_id"] if (name, method) == ("job_id", "POST") else ids[name]

    return _PARAMETER.sub(one, template)


def _png_b64() -> str:
    import base64

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("L", (8, 8), 100).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def _body(template: str, method: str = "POST", ids: dict[str, str] | None = None) -> dict:
    """A well-formed body, so a 404 comes from the lookup, not from validation."""
    if template.endswith("/predict"):
        return {"json": {"instances": [{"b64": _png_b64()}]}}
    if method == "PATCH":
        return {"json": {"threshold": {"strategy": "max_f1"}}}
    if method == "PUT":  # an alias of beta's own pointing at alpha's model
        return {"json": {"model_id": (ids or {}).get("model_id", "")}}
    return {}


def test_every_object_route_hides_other_tenants_objects(api_client, alpha, beta, alpha_objects) -> None:
    routes = object_routes(api_client.app)
    # The walk covers the resources we know (a route list that shrank would be a bug, too).
    assert {path.split("/")[2] for _, path in routes} >= {"datasets", "experiments", "jobs", "models"}
    assert len(routes) >= 9, routes
    for method, template in routes:
        path = fill(template, alpha_objects, method=method)
        response = api_client.request(method, path, headers=beta, **_body(template, method, alpha_objects))
        assert response.status_code == 404, (method, path, response.status_code, response.text)
        assert response.headers["content-type"] == PROBLEM
        for value in alpha_objects.values():
            # The detail may repeat the id beta sent, never anything else of alpha's.
            assert value in path or value not in response.text, (method, path, response.text)
    # Nothing beta tried changed alpha's objects, and each route does reach them for alpha.
    assert api_client.get(f"/v1/jobs/{alpha_objects['queued_job_id']}", headers=alpha).json()["status"] == "queued"
    for method, template in routes:
        path = fill(template, alpha_objects, method=method)
        if template.endswith("/events"):
            continue  # an active subject's stream never ends; tests/service/test_job_events.py reads them
        if method == "GET":
            assert api_client.get(path, headers=alpha).status_code == 200, path
        elif method == "POST":
            # predict: 503 (this model's stored program is a stub), cancel: 202 -- anything but 404
            assert api_client.post(path, headers=alpha, **_body(template)).status_code != 404, path


def test_job_submission_cannot_reach_another_tenants_objects(
    api_client, alpha, beta, alpha_objects, new_dataset
) -> None:
    foreign = api_client.post("/v1/jobs", headers=beta, json={"dataset_id": alpha_objects["dataset_id"]})
    assert foreign.status_code == 404, foreign.text
    assert foreign.headers["content-type"] == PROBLEM
    # Fine-tuning from alpha's job answers exactly what a job that never existed answers.
    own_dataset = new_dataset(beta)
    answers = []
    for job_id in (alpha_objects["job_id"], "0" * 32):
        spec = {"dataset_id": own_dataset, "model": {"arch": "simple_cnn", "init": f"job:{job_id}"}}
        response = api_client.post("/v1/jobs", headers=beta, json=spec)
        assert response.status_code in (404, 422), response.text
        answers.append((response.status_code, response.json()["detail"].replace(job_id, "<id>")))
    assert answers[0] == answers[1]
    assert api_client.get("/v1/jobs", headers=beta).json()["items"] == []


def test_idempotency_keys_are_per_tenant(api_client, alpha, beta, alpha_objects, new_dataset) -> None:
    """Beta reusing alpha's Idempotency-Key gets a job of its own, never alpha's."""
    own_dataset = new_dataset(beta)
    response = api_client.post(
        "/v1/jobs", headers={**beta, "Idempotency-Key": "shared-key"}, json={"dataset_id": own_dataset}
    )
    assert response.status_code == 202, response.text
    job = response.json()
    assert job["id"] != alpha_objects["queued_job_id"] and job["dataset_id"] == own_dataset
    assert alpha_objects["dataset_id"] not in response.text
