"""16-bit PNGs end to end: uploaded over HTTP, stored as uint16, trained (the worker in-process), served.

The classes differ only below the 8-bit resolution of most pixels' low byte,
so a pipeline that cut to 8 bits anywhere would see different numbers; the
served probabilities must equal the exported program applied to ``v / 65535``.
"""

from __future__ import annotations

import io
import zipfile

import numpy as np
import torch
from PIL import Image

from service.ingest import load_canonical, load_meta
from service.model_card import CARD_FILE, PROGRAM_FILE, ModelCard, artifact_key
from workers.lifecycle.claim import run_job
from workers.lifecycle.outcome import Outcome

SIDE = 8
PER_CLASS = {"clear": 16, "nodule": 8}


def _pixels(label: str, rng: np.random.Generator) -> np.ndarray:
    low = 20_000 if label == "clear" else 40_000
    return rng.integers(low, low + 15_000, size=(SIDE, SIDE)).astype(np.uint16)


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")  # uint16 -> a 16-bit grey PNG; uint8 -> 8-bit
    return buffer.getvalue()


def _zip() -> bytes:
    rng = np.random.default_rng(0)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for label, count in PER_CLASS.items():
            for index in range(count):
                archive.writestr(f"train/{label}/{index:02d}.png", _png(_pixels(label, rng)))
    return buffer.getvalue()


def _probabilities(response) -> list[list[float]]:
    assert response.status_code == 200, response.text
    return [[p["probabilities"][name] for name in PER_CLASS] for p in response.json()["predictions"]]


def test_sixteen_bit_pngs_upload_train_and_predict_at_full_precision(api_client, alpha, tmp_path) -> None:
    app = api_client.app
    upload = api_client.post("/v1/datasets", headers=alpha, files={"file": ("scans.zip", _zip(), "application/zip")})
    assert upload.status_code == 201, upload.text
    dataset = upload.json()
    assert dataset["pixel_bits"] == 16 and dataset["image_shape"] == [SIDE, SIDE, 1]
    assert api_client.get(f"/v1/datasets/{dataset['id']}", headers=alpha).json()["pixel_bits"] == 16
    spec = {"dataset_id": dataset["id"], "model": {"arch": "simple_cnn"}, "epochs": 1, "batch_size": 8}
    submitted = api_client.post("/v1/jobs", json=spec, headers=alpha)
    assert submitted.status_code == 202, submitted.text
    job_id = submitted.json()["id"]
    outcome = run_job(
        job_id,
        settings=app.state.settings,
        worker_id="w-test",
        session_factory=app.state.session_factory,
        store=app.state.blob_store,
    )
    assert outcome == Outcome.succeeded
    model_id = api_client.get(f"/v1/jobs/{job_id}", headers=alpha).json()["model_id"]
    store = app.state.blob_store
    with store.open_read(artifact_key(job_id, CARD_FILE)) as handle:
        card = ModelCard.model_validate_json(handle.read())
    assert card.input.pixel_bits == 16

    rng = np.random.default_rng(1)
    scans = [_pixels("nodule", rng), _pixels("clear", rng)]
    scans[1][0, 0] = scans[1][0, 1] + 1  # neighbours one 16-bit level apart
    url = f"/v1/models/{model_id}/predict"
    served = _probabilities(
        api_client.post(
            url, headers=alpha, files=[("files", (f"{i}.png", _png(s), "image/png")) for i, s in enumerate(scans)]
        )
    )
    store.download(artifact_key(job_id, PROGRAM_FILE), tmp_path / PROGRAM_FILE)
    program = torch.export.load(tmp_path / PROGRAM_FILE).module()
    batch = torch.from_numpy(np.stack(scans).astype(np.float32) / np.float32(65535))[:, None]
    with torch.no_grad():
        expected = torch.softmax(program(batch), dim=1).tolist()
    np.testing.assert_allclose(served, expected, atol=1e-5)

    # An 8-bit image at a 16-bit model is the same image widened by 257.
    grey = rng.integers(0, 256, size=(SIDE, SIDE), dtype=np.uint8)
    pair = [
        ("files", ("a.png", _png(grey), "image/png")),
        ("files", ("b.png", _png(grey.astype(np.uint16) * 257), "image/png")),
    ]
    narrow, wide = _probabilities(api_client.post(url, headers=alpha, files=pair))
    assert narrow == wide


def test_an_8_bit_zip_is_still_stored_as_uint8(api_client, alpha, tmp_path) -> None:
    rng = np.random.default_rng(2)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for label in PER_CLASS:
            for index in range(6):
                archive.writestr(f"train/{label}/{index}.png", _png(rng.integers(0, 256, (SIDE, SIDE), dtype=np.uint8)))
    upload = api_client.post("/v1/datasets", headers=alpha, files={"file": ("eight.zip", buffer.getvalue())})
    assert upload.status_code == 201, upload.text
    assert upload.json()["pixel_bits"] == 8
    prefix, store = f"datasets/{upload.json()['id']}", api_client.app.state.blob_store
    assert load_meta(store, prefix)["pixel_bits"] == 8
    splits = load_canonical(store, prefix, staging=tmp_path / "staging")
    assert {images.dtype for images, _ in splits.values()} == {np.dtype(np.uint8)}
