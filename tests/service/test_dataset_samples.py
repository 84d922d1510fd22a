"""`GET /v1/datasets/{id}/samples.png`: the first images of each class as a grid, tenant-scoped, validated."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from service.sample_grid import render_grid

# The grid's geometry for 8 x 8 images: tiles enlarged 8 times to 64 px, 4 px gaps, a 140 px label column.
TILE, STEP, LEFT = 64, 68, 140


def _labelled(counts: list[int], *, channels: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Images whose pixels all equal ``10 * class + position in class`` (so a tile names its source)."""
    labels = np.concatenate([np.full(n, c, dtype=np.int64) for c, n in enumerate(counts)])
    rank = np.concatenate([np.arange(n) for n in counts])
    values = (10 * labels + rank + 1).astype(np.uint8)
    return np.broadcast_to(values[:, None, None, None], (len(labels), 8, 8, channels)).copy(), labels


def _upload(client, headers, *, channels: int) -> str:
    arrays = {}
    for split, counts in (("train", [30, 5]), ("val", [20, 20]), ("test", [20, 20])):
        images, labels = _labelled(counts, channels=channels)
        # Interleave the classes, so "first per class" differs from "first in the file".
        order = np.argsort(np.arange(len(labels)) % 7, kind="stable")
        arrays[f"{split}_images"] = images[order] if channels == 3 else images[order, :, :, 0]
        arrays[f"{split}_labels"] = labels[order]
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    response = client.post("/v1/datasets", files={"file": ("toy.npz", buffer.getvalue())}, headers=headers)
    assert response.status_code == 201, response.text
    return response.json()["id"]


def _tile(grid: np.ndarray, *, row: int, column: int) -> np.ndarray:
    top, left = 4 + row * STEP, LEFT + column * STEP
    return grid[top : top + TILE, left : left + TILE]


@pytest.mark.parametrize("channels", [1, 3])
def test_the_grid_has_a_row_per_class_of_its_first_images(api_client, alpha, channels):
    dataset_id = _upload(api_client, alpha, channels=channels)
    response = api_client.get(f"/v1/datasets/{dataset_id}/samples.png?split=train&per_class=6", headers=alpha)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png" and response.headers["cache-control"] == "no-cache"
    grid = np.asarray(Image.open(io.BytesIO(response.content)).convert("RGB"))
    assert grid.shape == (2 * STEP + 4, LEFT + 6 * STEP + 4, 3)
    # Row c, column i is the class's i-th image in stored order: every pixel 10 c + i + 1.
    rank_in_file = {0: [0, 7, 14, 21, 28, 1], 1: [0, 1, 2, 3, 4]}
    for row, ranks in rank_in_file.items():
        for column, rank in enumerate(ranks):
            assert (_tile(grid, row=row, column=column) == 10 * row + rank + 1).all(), (row, column)
    # Class 1 has 5 train images: its sixth cell is blank (light grey), not another class's image.
    assert (_tile(grid, row=1, column=5) == (238, 240, 243)).all()
    # The label column carries text (the class name and count): dark pixels left of the tiles.
    assert grid[:, :LEFT].min() < 128
    again = api_client.get(f"/v1/datasets/{dataset_id}/samples.png?split=train&per_class=6", headers=alpha)
    assert again.content == response.content


def test_defaults_are_train_and_eight_per_class_and_other_splits_work(api_client, alpha):
    dataset_id = _upload(api_client, alpha, channels=1)
    default = api_client.get(f"/v1/datasets/{dataset_id}/samples.png", headers=alpha)
    assert Image.open(io.BytesIO(default.content)).size == (LEFT + 8 * STEP + 4, 2 * STEP + 4)
    test = api_client.get(f"/v1/datasets/{dataset_id}/samples.png", params={"split": "test"}, headers=alpha)
    assert test.status_code == 200 and test.content != default.content


def test_another_tenant_gets_404_and_no_key_401(api_client, alpha, beta):
    dataset_id = _upload(api_client, alpha, channels=1)
    other = api_client.get(f"/v1/datasets/{dataset_id}/samples.png", headers=beta)
    assert other.status_code == 404 and other.headers["content-type"] == "application/problem+json"
    assert dataset_id in other.json()["detail"]
    assert api_client.get("/v1/datasets/nope/samples.png", headers=alpha).status_code == 404
    assert api_client.get(f"/v1/datasets/{dataset_id}/samples.png").status_code == 401


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"split": "holdout"}, "split"),
        ({"split": "1"}, "split"),
        ({"per_class": "0"}, "per_class"),
        ({"per_class": "33"}, "per_class"),
        ({"per_class": "true"}, "per_class"),
        ({"per_class": "2.5"}, "per_class"),
        ({"per_class": "eight"}, "per_class"),
    ],
)
def test_a_bad_parameter_is_a_422_naming_it(api_client, alpha, new_dataset, query, field):
    dataset_id = new_dataset(alpha)  # validation answers before any array is read
    response = api_client.get(f"/v1/datasets/{dataset_id}/samples.png", params=query, headers=alpha)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert [error["loc"] for error in response.json()["errors"]] == [["query", field]]


def test_sixteen_bit_pixels_are_scaled_by_the_dtype_maximum():
    images = np.zeros((2, 8, 8, 1), dtype=np.uint16)
    images[0], images[1] = 65535, 32768
    png = render_grid(images=images, labels=np.array([0, 1]), class_names=["a", "b"], per_class=1, split="train")
    grid = np.asarray(Image.open(io.BytesIO(png)).convert("L"))
    assert (_tile(grid, row=0, column=0) == 255).all()
    assert (_tile(grid, row=1, column=0) == 128).all()


def test_large_images_shrink_to_the_tile_and_many_classes_stop_at_100_rows():
    images = np.full((101, 200, 100, 3), 200, dtype=np.uint8)
    png = render_grid(
        images=images, labels=np.arange(101), class_names=[str(i) for i in range(101)], per_class=1, split="val"
    )
    grid = Image.open(io.BytesIO(png))
    footer = 13 + 8
    assert grid.size == (LEFT + 32 + 4 + 4, 100 * STEP + 4 + footer)
    assert (np.asarray(grid.convert("RGB"))[4 : 4 + TILE, LEFT : LEFT + 32] == 200).all()
