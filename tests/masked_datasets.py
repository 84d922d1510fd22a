"""A tiny upload with segmentation masks on its rare class only (copy-paste needs masks)."""

from __future__ import annotations

import io

import numpy as np


def masked_npz() -> bytes:
    rng = np.random.default_rng(0)
    labels = np.array([0] * 30 + [1] * 6, dtype=np.uint8)
    images = rng.integers(0, 255, size=(36, 8, 8), dtype=np.uint8)
    masks = np.zeros((36, 8, 8), dtype=np.uint8)
    masks[labels == 1, 2:5, 2:5] = 1  # only the rare class has objects
    buffer = io.BytesIO()
    np.savez_compressed(buffer, train_images=images, train_labels=labels, train_masks=masks)
    return buffer.getvalue()


def upload_masked(api_client, headers: dict[str, str]) -> dict:
    """The masked set uploaded through ``POST /v1/datasets``; the dataset resource."""
    files = {"file": ("masked.npz", masked_npz(), "application/octet-stream")}
    response = api_client.post("/v1/datasets", files=files, headers=headers)
    assert response.status_code == 201, response.text
    return response.json()
