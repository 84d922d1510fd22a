"""Property-based fuzzing of every operation in the app's own OpenAPI schema (schemathesis 4).

The app runs for real: a migrated SQLite database, the SQLite-file broker and a
``LocalBlobStore`` under a temp data dir, a dataset uploaded over HTTP and a
finished job whose registered model is a real exported ``torch.export`` program.
Every request carries the bootstrap key, and ``RealIds`` swaps the generated
path ids (and a job spec's ``dataset_id``) for real ones on every other case, so
the fuzzer reaches the code behind the 404s too. (It runs in the test body:
schemathesis allows ``before_call`` hooks only globally, where they would reach
other test modules.)

The schema comes from ``app.openapi()`` and each call names the app
(``app=``), whose lifespan the module fixture starts once and stops with
``shutdown_lifespans()``. ``schemathesis.pytest.from_fixture`` would be the
natural loader, but schemathesis 4.32 rewrites ``request.node._nodeid``, which
pytest 9 no longer has.

Checks: no 5xx, every status code, content type, header and body is the one
the schema documents, and schema-invalid (negative) data is refused. Added
cases send a job spec whose integer, number or boolean fields hold the types
a lax parser would coerce (``true``, ``"5"``, ``5.0``); each must be a 422
naming the field. Two built-in checks are left out on purpose:

* ``positive_data_acceptance`` expects any schema-valid request to succeed, but
  bytes that fit ``format: binary`` are not a decodable dataset archive or
  image, and a random id fits ``type: string`` without naming an object; the
  4xx answers are correct, so this check would only report the fuzzer's luck.
* ``ignored_auth`` (and the other auth-probing checks) replay requests without
  credentials; the harness injects a valid key into every request on purpose,
  so they would test the harness. Auth is covered by tests/service/test_auth.py
  and tests/service/test_tenant_walk.py.

Generation is derandomized (``derandomize=True``, no example database) so a CI
run is reproducible; ``max_examples`` bounds the fuzzing phase per operation.
"""

from __future__ import annotations

import itertools
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from inference_artefacts import inference_support
from job_rows import add_model
from schemathesis.checks import not_a_server_error
from schemathesis.python.asgi import get_client, shutdown_lifespans
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from service.config import Settings
from service.db import transaction
from service.main import create_app
from service.models import Artifact, EpochMetrics, Job, JobStatus, utcnow
from service.storage import BlobStore

BOOTSTRAP_KEY = "rf_test-bootstrap-key-0123456789abcdef"  # as in tests/service/conftest.py
BOOTSTRAP = {"Authorization": f"Bearer {BOOTSTRAP_KEY}"}
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
    negative_data_rejection,
]
ID_PARAMETERS = ("dataset_id", "job_id", "model_id", "name")


def _npz_bytes(tmp: Path) -> bytes:
    """A small two-class MedMNIST-layout npz (train split only; val/test are carved by ingest)."""
    rng = np.random.default_rng(0)
    labels = np.array([0] * 16 + [1] * 8, dtype=np.uint8)
    images = rng.integers(0, 256, size=(labels.size, 6, 6), dtype=np.uint8)
    path = tmp / "small.npz"
    with open(path, "wb") as handle:
        np.savez_compressed(handle, train_images=images, train_labels=labels[:, None])
    return path.read_bytes()


def _upload(client, data: bytes, *, name: str) -> str:
    response = client.post("/v1/datasets", headers=BOOTSTRAP, files={"file": (f"{name}.npz", data)})
    assert response.status_code == 201, response.text
    return response.json()["id"]


def _finish_with_model(app, job_id: str, *, exported_folder: Path) -> str:
    """The worker's part of a succeeded job: artefacts in the blob store, metrics and a model row."""
    store: BlobStore = app.state.blob_store
    prefix = f"jobs/{job_id}/artifacts"
    with transaction(app.state.session_factory) as session:
        job = session.get(Job, job_id)
        job.status, job.progress_epoch, job.best_epoch = JobStatus.succeeded, 1, 1
        job.started_at = job.finished_at = utcnow()
        job.test_metrics = {"accuracy": 0.5}
        session.add(
            EpochMetrics(
                job_id=job_id, epoch=1, train_loss=0.7, val_loss=0.6, lr=1e-3, seconds=0.1, val={"accuracy": 0.5}
            )
        )
        for path in sorted(exported_folder.iterdir()):
            info = store.write(f"{prefix}/{path.name}", path.read_bytes())
            kind = "application/json" if path.suffix == ".json" else "application/octet-stream"
            session.add(
                Artifact(
                    job_id=job_id,
                    name=path.name,
                    blob_key=f"{prefix}/{path.name}",
                    size=info.size,
                    content_type=kind,
                    sha256=info.sha256,
                )
            )
        return add_model(
            session,
            job,
            class_names=["0", "1"],
            input_shape=[6, 6, 1],
            blob_prefix=prefix,
            threshold=0.5,
            positive_class=1,
            metrics={"accuracy": 0.5},
        )


def _seed(app, tmp: Path) -> dict[str, list[str]]:
    """Real objects for ``RealIds`` to substitute: ids per path parameter."""
    exported = inference_support().export_net(
        tmp / "model", channels=1, height=6, width=6, class_names=["0", "1"], seed=3
    )
    with get_client(app) as client:
        data = _npz_bytes(tmp)
        dataset_id, doomed_id = _upload(client, data, name="kept"), _upload(client, data, name="doomed")
        response = client.post("/v1/jobs", headers=BOOTSTRAP, json={"dataset_id": dataset_id, "epochs": 1})
        assert response.status_code == 202, response.text
        job_id = response.json()["id"]
    model_id = _finish_with_model(app, job_id, exported_folder=exported.folder)
    names = sorted(path.name for path in exported.folder.iterdir())
    return {
        "dataset_id": [dataset_id],
        "doomed_dataset_id": [doomed_id],
        "job_id": [job_id],
        "model_id": [model_id],
        "name": names,
    }


class RealIds:
    """Swaps generated ids for real ones on every other case (a deterministic turn, so runs repeat)."""

    def __init__(self, ids: dict[str, list[str]], *, app) -> None:
        self.ids, self.app, self.turn = ids, app, itertools.count()

    def apply(self, case) -> None:
        # On the case itself, not only the call: schemathesis then also sends it on the
        # cases whose security header it would otherwise drop.
        case.headers = {**(case.headers or {}), **BOOTSTRAP}
        step = next(self.turn)
        if step % 2:
            return
        pick = step // 2
        for key in ID_PARAMETERS:
            if case.path_parameters and key in case.path_parameters:
                # DELETE gets its own dataset, so the one the other operations use survives.
                source = "doomed_dataset_id" if case.method.upper() == "DELETE" else key
                case.path_parameters[key] = self.ids[source][pick % len(self.ids[source])]
        if case.operation.path == "/v1/jobs" and isinstance(case.body, dict) and "dataset_id" in case.body:
            case.body["dataset_id"] = self.ids["dataset_id"][0]


@pytest.fixture(scope="module")
def real_ids(tmp_path_factory: pytest.TempPathFactory, _migrated_template: Path) -> Iterator[RealIds]:
    """One running app for every operation of the module (its lifespan started once), seeded."""
    data_dir = tmp_path_factory.mktemp("fuzz") / "rarefit-data"
    data_dir.mkdir()
    shutil.copyfile(_migrated_template, data_dir / "rarefit.db")
    app_settings = Settings(
        _env_file=None,
        data_dir=data_dir,
        database_url=None,
        broker_url=None,
        weights_dir=None,
        bootstrap_api_key=BOOTSTRAP_KEY,
        device="cpu",
        max_concurrent_jobs_per_tenant=3,
    )
    app = create_app(app_settings, run_reaper=False)
    try:
        yield RealIds(_seed(app, data_dir.parent), app=app)
    finally:
        shutdown_lifespans()


# The schema is the app's own; building an app reads no files and starts nothing.
schema = schemathesis.openapi.from_dict(create_app(Settings(_env_file=None), run_reaper=False).openapi())


@schema.parametrize()
@settings(max_examples=30, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck))
def test_every_operation_conforms_to_its_schema(case, real_ids: RealIds) -> None:
    real_ids.apply(case)
    case.call_and_validate(headers=BOOTSTRAP, checks=CHECKS, app=real_ids.app)


LAX_SPEC_VALUES = [
    ("epochs", True),
    ("epochs", "2"),
    ("epochs", 2.0),
    ("batch_size", False),
    ("seed", "0"),
    ("spec_version", True),
    ("model.image_size", 32.5),
    ("optim.lr", True),
    ("optim.lr", "0.1"),
    ("optim.warmup_epochs", 1.0),
    ("augment.hflip", 1),
    ("augment.hflip", "true"),
    ("compile", 0),
    ("max_runtime_seconds", True),
]


@pytest.mark.parametrize(("field", "value"), LAX_SPEC_VALUES, ids=[f"{f}={v!r}" for f, v in LAX_SPEC_VALUES])
def test_a_job_spec_value_of_the_wrong_type_is_a_422_naming_the_field(real_ids: RealIds, field: str, value) -> None:
    *parents, leaf = field.split(".")
    body: dict = {"dataset_id": real_ids.ids["dataset_id"][0], "epochs": 1}
    inner = body
    for part in parents:
        inner = inner.setdefault(part, {})
    inner[leaf] = value
    case = schema["/v1/jobs"]["POST"].Case(body=body, headers=BOOTSTRAP, media_type="application/json")
    response = case.call(app=real_ids.app)
    case.validate_response(response, checks=CHECKS)
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["loc"] == ["body", *field.split(".")]
