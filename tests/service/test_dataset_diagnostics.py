"""Pre-flight diagnostics at upload, over HTTP: duplicates across splits, tiny test classes, and the advice."""

from __future__ import annotations

import io

import numpy as np


def _npz(*, train: list[int], val: list[int], test: list[int], seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, counts in (("train", train), ("val", val), ("test", test)):
        labels = np.concatenate([np.full(n, c, dtype=np.int64) for c, n in enumerate(counts)])
        arrays[f"{split}_images"] = rng.integers(1, 255, size=(len(labels), 8, 8), dtype=np.uint8)
        arrays[f"{split}_labels"] = labels
    return arrays


def _upload(client, headers, arrays: dict[str, np.ndarray]) -> dict:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    files = {"file": ("toy.npz", buffer.getvalue(), "application/octet-stream")}
    response = client.post("/v1/datasets", files=files, headers=headers)
    assert response.status_code == 201, response.text
    return response.json()


def test_an_image_in_both_train_and_test_is_found_and_advised_against(api_client, alpha):
    arrays = _npz(train=[30, 30], val=[25, 25], test=[25, 25])
    arrays["test_images"][7] = arrays["train_images"][3]  # the same scan in train and test
    arrays["train_images"][10] = arrays["train_images"][11]  # and one duplicate within train
    dataset = _upload(api_client, alpha, arrays)
    duplicates = dataset["diagnostics"]["duplicates"]
    assert duplicates["across"] == [{"splits": ["train", "test"], "images": 1, "examples": [{"train": 3, "test": 7}]}]
    assert duplicates["within"]["train"] == {"groups": 1, "images": 2}
    assert duplicates["within"]["test"] == {"groups": 0, "images": 0}
    assert dataset["diagnostics"]["small_support"] == [] and dataset["diagnostics"]["constant_images"] == {}
    codes = [item["code"] for item in dataset["advice"]]
    assert codes == ["duplicates_across_train_test"]
    assert (
        api_client.get(f"/v1/datasets/{dataset['id']}", headers=alpha).json()["diagnostics"] == dataset["diagnostics"]
    )


def test_a_class_with_three_test_images_gets_a_support_warning_with_its_recall_bound(api_client, alpha):
    arrays = _npz(train=[40, 20], val=[25, 25], test=[25, 3])
    arrays["val_images"][0] = 0  # a blank image
    dataset = _upload(api_client, alpha, arrays)
    small = dataset["diagnostics"]["small_support"]
    assert small == [
        {"split": "test", "class": "1", "support": 3, "recall_lower_bound_if_perfect": round(0.05 ** (1 / 3), 4)}
    ]
    assert dataset["diagnostics"]["duplicates"]["across"] == []
    assert dataset["diagnostics"]["constant_images"] == {"val": {"images": 1, "examples": [0]}}
    advice = {item["code"]: item for item in dataset["advice"]}
    assert set(advice) == {"small_test_support", "constant_images_val"}
    assert advice["small_test_support"]["suggested"]["selection_metric"] == "balanced_accuracy"
    assert "1/3" in advice["small_test_support"]["message"]
