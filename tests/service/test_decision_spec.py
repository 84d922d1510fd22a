"""Job submission checks the decision fields against the dataset: 422 naming the field, never a job."""

from __future__ import annotations

import pytest

from service.spec import JobSpec


@pytest.mark.parametrize(
    ("num_classes", "extra", "loc", "fragment"),
    [
        (3, {"loss": {"type": "focal", "alpha": 0.25}}, ["body", "loss", "alpha"], "one value per class or 'balanced'"),
        (2, {"positive_class": "dog"}, ["body", "positive_class"], "neither a class name nor an index"),
        (2, {"positive_class": 2}, ["body", "positive_class"], "neither a class name nor an index"),
        (
            2,
            {"threshold": {"strategy": "recall_at_least", "value": 0.9, "class": "c7"}},
            ["body", "threshold", "class"],
            "neither a class name",
        ),
        (3, {"threshold": {"strategy": "cost", "cost": [[0, 1], [1, 0]]}}, ["body", "threshold", "cost"], "3×3"),
    ],
)
def test_decision_fields_that_do_not_fit_the_dataset_answer_422(
    api_client, alpha, new_dataset, num_classes, extra, loc, fragment
) -> None:
    dataset_id = new_dataset(alpha, num_classes=num_classes)
    response = api_client.post("/v1/jobs", headers=alpha, json={"dataset_id": dataset_id, **extra})
    assert response.status_code == 422, response.text
    problem = response.json()
    assert problem["errors"][0]["loc"] == loc and fragment in problem["detail"]
    assert api_client.get("/v1/jobs", headers=alpha).json()["items"] == []


def test_valid_decision_fields_are_accepted(api_client, alpha, new_dataset) -> None:
    dataset_id = new_dataset(alpha, num_classes=3)
    spec = {
        "dataset_id": dataset_id,
        "positive_class": "c0",
        "loss": {"type": "focal", "alpha": [0.2, 0.3, 0.5]},
        "threshold": {"strategy": "recall_at_least", "value": 0.9, "class": 2, "guarantee": True, "confidence": 0.9},
        "calibration": {"method": "none"},
    }
    response = api_client.post("/v1/jobs", headers=alpha, json=spec)
    assert response.status_code == 202, response.text
    stored = response.json()["spec"]
    assert stored["threshold"]["class"] == 2 and stored["positive_class"] == "c0"


@pytest.mark.parametrize(
    ("threshold", "fragment"),
    [
        ({"strategy": "recall_at_least"}, "threshold.value is required"),
        ({"strategy": "target_recall"}, "threshold.target_recall is required"),
        ({"strategy": "max_f1", "guarantee": True}, "guarantee needs strategy"),
        ({"strategy": "cost"}, "cost is given exactly when"),
        ({"strategy": "recall_at_least", "value": True}, "valid number"),
        ({"strategy": "max_f1", "confidence": 1.0}, "less than 1"),
    ],
)
def test_threshold_spec_is_strict(threshold, fragment) -> None:
    with pytest.raises(ValueError, match=fragment):
        JobSpec.model_validate({"dataset_id": "d", "threshold": threshold})


def test_target_recall_is_an_alias_of_recall_at_least() -> None:
    spec = JobSpec.model_validate({"dataset_id": "d", "threshold": {"strategy": "target_recall", "target_recall": 0.8}})
    canonical = spec.threshold.canonical()
    assert (canonical.strategy, canonical.value, canonical.class_) == ("recall_at_least", 0.8, None)
