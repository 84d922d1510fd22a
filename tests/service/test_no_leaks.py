"""Errors and logs never give away secrets or where the server keeps its files.

A sequence of bad requests (missing, malformed, unknown and revoked keys, hostile
uploads, bad specs, unknown ids, garbage for predict, a model whose stored
program is corrupt) runs against the real app with every logger at DEBUG from
start-up to shut-down. No response (body or headers) and no log record (message
or formatted traceback) may contain an API key's plaintext, the bootstrap key or
the temporary data directory's path.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from inference_artefacts import inference_support
from job_rows import add_model
from starlette.testclient import TestClient

from service.config import Settings
from service.db import transaction
from service.main import create_app
from service.models import Job, JobStatus
from service.repository import tenants

BOOTSTRAP_KEY = "rf_test-bootstrap-key-0123456789abcdef"  # api_settings' key (tests/service/conftest.py)
_FORMATTER = logging.Formatter()


def _export_tiny(folder: Path) -> Path:
    """A real ``torch.export`` artefact, built by the inference tests' helper."""
    return inference_support().export_net(folder, channels=1, height=6, width=6, class_names=["0", "1"], seed=5).folder


def _npz_bytes() -> bytes:
    rng = np.random.default_rng(0)
    labels = np.array([0] * 16 + [1] * 8, dtype=np.uint8)
    buffer = io.BytesIO()
    images = rng.integers(0, 256, (labels.size, 6, 6), dtype=np.uint8)
    np.savez_compressed(buffer, train_images=images, train_labels=labels)
    return buffer.getvalue()


def _zip(entries: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def _register_model(app, *, tenant_id: str, dataset_id: str, program: bytes | None, folder: Path) -> str:
    """A succeeded job's model: the exported artefact, with both programs (``model.pt2`` and
    ``model.onnx``) replaced by ``program``."""
    store = app.state.blob_store
    with transaction(app.state.session_factory) as session:
        job = Job(tenant_id=tenant_id, dataset_id=dataset_id, spec={}, epochs=1, status=JobStatus.succeeded)
        session.add(job)
        session.flush()
        prefix = f"jobs/{job.id}/artifacts"
        for path in folder.iterdir():
            if path.name in ("model.pt2", "model.onnx") and program is not None:
                store.write(f"{prefix}/{path.name}", program)
            else:
                store.write(f"{prefix}/{path.name}", path.read_bytes())
        return add_model(session, job, class_names=["0", "1"], input_shape=[6, 6, 1], blob_prefix=prefix)


class Probe:
    """Sends requests and keeps every response for the final scan."""

    def __init__(self, client: TestClient) -> None:
        self.client, self.responses = client, []

    def send(self, method: str, path: str, *, expect: int, **kwargs):
        response = self.client.request(method, path, **kwargs)
        assert response.status_code == expect, (method, path, response.status_code, response.text)
        if expect >= 400:
            assert response.headers["content-type"] == "application/problem+json", response.headers
        self.responses.append(response)
        return response


@pytest.fixture
def probe(api_settings: Settings, caplog: pytest.LogCaptureFixture) -> Iterator[Probe]:
    caplog.set_level(logging.DEBUG)  # every logger, before the app starts, so start-up is scanned too
    with TestClient(create_app(api_settings, run_reaper=False), raise_server_exceptions=False) as client:
        yield Probe(client)


def _keys(app) -> tuple[str, str, str]:
    """(tenant id, a live key, a revoked key) for tenant 'alpha'."""
    with transaction(app.state.session_factory) as session:
        tenant = tenants.get_or_create_tenant(session, name="alpha")
        _, live = tenants.create_api_key(session, tenant_id=tenant.id)
        revoked_row, revoked = tenants.create_api_key(session, tenant_id=tenant.id)
        session.flush()
        tenants.revoke_api_key(session, key_id=revoked_row.id)
        return tenant.id, live, revoked


def _auth_failures(probe: Probe, *, revoked: str) -> None:
    for headers in (
        {},
        {"Authorization": "Bearer not-a-key"},
        {"Authorization": f"Bearer {revoked}"},
        {"Authorization": "Bearer rf_" + "A" * 43},
        {"Authorization": f"Basic {revoked}"},
        {"Authorization": f"Bearer {BOOTSTRAP_KEY}x"},
    ):
        probe.send("GET", "/v1/datasets", expect=401, headers=headers)
        probe.send("POST", "/v1/jobs", expect=401, headers=headers, json={"dataset_id": "0" * 32})


def _bad_uploads(probe: Probe, headers: dict[str, str]) -> None:
    hostile = {
        "slip.zip": (_zip({"../../../etc/passwd": b"x", "train/a/0.png": b"x"}), 422),
        "abs.zip": (_zip({"/etc/passwd": b"x"}), 422),
        "notes.txt": (b"hello", 415),
        "x.npz": (b"PK\x03\x04" + bytes(100), 422),
        "empty.npz": (b"", 422),
        "obj.npz": (_zip({"train_images.npy": b"\x93NUMPY garbage", "train_labels.npy": b""}), 422),
    }
    for name, (data, status) in hostile.items():
        probe.send("POST", "/v1/datasets", expect=status, headers=headers, files={"file": (name, data)})
    probe.send("POST", "/v1/datasets", expect=422, headers=headers, data={"name": "no file"})


def _bad_specs(probe: Probe, headers: dict[str, str], *, dataset_id: str) -> None:
    specs = [
        {"dataset_id": dataset_id, "unknown": 1},
        {"dataset_id": dataset_id, "epochs": 10**9},
        {"dataset_id": dataset_id, "model": {"init": "weights:../../etc/passwd"}},
        {"dataset_id": dataset_id, "model": {"init": "job:" + "f" * 32}},
        {"dataset_id": dataset_id, "loss": {"alpha": [0.5, 0.5, 0.5]}},
        {"dataset_id": "f" * 32},
    ]
    for spec in specs:
        probe.send("POST", "/v1/jobs", expect=404 if spec == specs[-1] else 422, headers=headers, json=spec)
    probe.send(
        "POST",
        "/v1/jobs",
        expect=422,
        headers={**headers, "Content-Type": "application/json"},
        content=b'{"dataset_id": ',
    )
    probe.send(
        "POST", "/v1/jobs", expect=422, headers={**headers, "Content-Type": "application/json"}, content=b"\xff\xfe{}"
    )


def _unknown_ids(probe: Probe, headers: dict[str, str], *, job_id: str) -> None:
    for path in (
        "/v1/datasets/nope",
        "/v1/jobs/nope",
        "/v1/jobs/nope/metrics",
        "/v1/jobs/nope/artifacts",
        f"/v1/jobs/{job_id}/artifacts/nope",
        f"/v1/jobs/{job_id}/artifacts/..%2F..%2Frarefit.db",
        "/v1/models/nope",
        f"/v1/models/{'0' * 32}",
    ):
        probe.send("GET", path, expect=404, headers=headers)
    probe.send("DELETE", "/v1/datasets/nope", expect=404, headers=headers)
    probe.send("POST", "/v1/jobs/nope/cancel", expect=404, headers=headers)


def _garbage_predictions(probe: Probe, headers: dict[str, str], *, good: str, corrupt: str) -> None:
    url = f"/v1/models/{good}/predict"
    probe.send("POST", url, expect=422, headers=headers, json={"instances": [{"b64": "!!not base64!!"}]})
    probe.send(
        "POST",
        url,
        expect=422,
        headers=headers,
        json={"instances": [{"b64": base64.b64encode(b"\x89PNG\r\n\x1a\n garbage").decode()}]},
    )
    probe.send("POST", url, expect=422, headers=headers, files={"files": ("x.png", b"GIF89a nonsense")})
    probe.send("POST", url, expect=422, headers=headers, json={"instances": [], "extra": True})
    probe.send("POST", url, expect=415, headers={**headers, "Content-Type": "text/plain"}, content=b"hi")
    probe.send(
        "POST", url, expect=400, headers={**headers, "Content-Type": "multipart/form-data"}, content=b"--x\r\nbroken"
    )  # no boundary
    png = base64.b64encode(_png()).decode()
    probe.send("POST", f"/v1/models/{corrupt}/predict", expect=503, headers=headers, json={"instances": [{"b64": png}]})
    probe.send("POST", "/v1/models/nope/predict", expect=404, headers=headers, json={"instances": [{"b64": png}]})


def _png() -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("L", (6, 6), 128).save(buffer, format="PNG")
    return buffer.getvalue()


def _texts(records: list[logging.LogRecord]) -> Iterator[tuple[str, str]]:
    for record in records:
        text = record.getMessage()
        if record.exc_info:
            text += "\n" + _FORMATTER.formatException(record.exc_info)
        yield record.name, text


def test_errors_and_logs_hold_no_keys_or_paths(probe: Probe, api_settings: Settings, caplog, tmp_path) -> None:
    app = probe.client.app
    tenant_id, live, revoked = _keys(app)
    headers = {"Authorization": f"Bearer {live}"}
    dataset = probe.send(
        "POST", "/v1/datasets", expect=201, headers=headers, files={"file": ("small.npz", _npz_bytes())}
    ).json()["id"]
    job_id = probe.send("POST", "/v1/jobs", expect=202, headers=headers, json={"dataset_id": dataset}).json()["id"]
    folder = _export_tiny(tmp_path / "artefact")
    good = _register_model(app, tenant_id=tenant_id, dataset_id=dataset, program=None, folder=folder)
    corrupt = _register_model(
        app, tenant_id=tenant_id, dataset_id=dataset, program=b"PK\x03\x04 not a program", folder=folder
    )

    _auth_failures(probe, revoked=revoked)
    _bad_uploads(probe, headers)
    _bad_specs(probe, headers, dataset_id=dataset)
    _unknown_ids(probe, headers, job_id=job_id)
    _garbage_predictions(probe, headers, good=good, corrupt=corrupt)

    secrets = {
        "live key": live,
        "revoked key": revoked,
        "bootstrap key": BOOTSTRAP_KEY,
        "data dir": str(api_settings.data_dir),
        "tmp dir": str(tmp_path),
    }
    for response in probe.responses:
        shown = response.text + json.dumps(dict(response.headers))
        for what, secret in secrets.items():
            assert secret not in shown, (what, response.request.method, response.request.url, shown)
    records = caplog.get_records("setup") + caplog.get_records("call")
    assert any(name.startswith("service.") for name, _ in _texts(records))  # the scan saw the app's own logs
    for name, text in _texts(records):
        for what, secret in secrets.items():
            assert secret not in text, (what, name, text)
