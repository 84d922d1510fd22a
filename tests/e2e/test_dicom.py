"""A zip of DICOM files (made here with pydicom) uploads, trains and predicts over HTTP.

The classes differ by a bright square the VOI window keeps; half the files are
MONOCHROME1 with the stored values inverted, so they only look like the rest
once the decoder inverts them back. Predicting a DICOM must give exactly what
predicting the PNG of its decoded pixels gives: one decoder for both paths.
"""

from __future__ import annotations

import io
import time
import zipfile

import httpx
import numpy as np
import pytest
from image_files import dicom_bytes
from PIL import Image

from service.imaging import decode_pixels

pytestmark = pytest.mark.e2e

SIDE = 16
PER_CLASS = {"clear": 24, "nodule": 12}
WINDOW = (1000.5, 1000)  # center, width: stored 500 .. 1500 spans the display range


def _stored_pixels(label: str, rng: np.random.Generator) -> np.ndarray:
    pixels = rng.integers(400, 700, size=(SIDE, SIDE)).astype(np.uint16)  # dark, noisy
    if label == "nodule":
        top, left = rng.integers(2, SIDE - 8, size=2)
        pixels[top : top + 6, left : left + 6] = rng.integers(1300, 1600, size=(6, 6))
    return pixels


def _dicom(label: str, index: int, rng: np.random.Generator) -> bytes:
    pixels = _stored_pixels(label, rng)
    if index % 2:  # low values bright: stored inverted within 12 bits, window mirrored
        return dicom_bytes(4095 - pixels, photometric="MONOCHROME1", window=(4095 - WINDOW[0] + 1, WINDOW[1]))
    return dicom_bytes(pixels, window=WINDOW)


def _dicom_zip() -> bytes:
    rng = np.random.default_rng(0)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for label, count in PER_CLASS.items():
            for index in range(count):
                archive.writestr(f"train/{label}/{index:03d}.dcm", _dicom(label, index, rng))
    return buffer.getvalue()


def _wait(client: httpx.Client, job_id: str) -> dict:
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return job
        time.sleep(0.5)
    raise AssertionError(f"job {job_id} did not finish in time")


@pytest.mark.timeout(600)
def test_a_zip_of_dicom_files_uploads_trains_and_predicts(start_server) -> None:
    server = start_server()
    headers = {"Authorization": f"Bearer {server.api_key}"}
    with httpx.Client(base_url=server.base_url, headers=headers, timeout=60.0) as client:
        upload = client.post("/v1/datasets", files={"file": ("scans.zip", _dicom_zip(), "application/zip")})
        assert upload.status_code == 201, upload.text
        dataset = upload.json()
        assert dataset["class_names"] == ["clear", "nodule"] and dataset["image_shape"] == [SIDE, SIDE, 1]
        spec = {"dataset_id": dataset["id"], "model": {"arch": "simple_cnn"}, "epochs": 2, "batch_size": 8}
        submitted = client.post("/v1/jobs", json=spec)
        assert submitted.status_code == 202, submitted.text
        job = _wait(client, submitted.json()["id"])
        assert job["status"] == "succeeded", job
        rng = np.random.default_rng(1)
        scans = [_dicom("nodule", 0, rng), _dicom("clear", 1, rng)]
        pngs = [_png(decode_pixels(scan, max_pixels=10**6)) for scan in scans]
        url = f"/v1/models/{job['model_id']}/predict"
        by_dicom = client.post(
            url, files=[("files", (f"{i}.dcm", s, "application/dicom")) for i, s in enumerate(scans)]
        )
        by_png = client.post(url, files=[("files", (f"{i}.png", p, "image/png")) for i, p in enumerate(pngs)])
        assert by_dicom.status_code == 200 and by_png.status_code == 200, (by_dicom.text, by_png.text)
        assert by_dicom.json()["predictions"] == by_png.json()["predictions"]
        bad = client.post(url, files=[("files", ("cine.dcm", dicom_bytes(np.zeros((4, 4), np.uint16), frames=3)))])
        assert bad.status_code == 422 and "multi-frame DICOM (3 frames)" in bad.json()["detail"]


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()
