"""The job spec's strict types: no coercion of booleans, strings or fractional floats; ints are numbers."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from service.spec import JobSpec


def _problem(**fields) -> tuple[tuple, str]:
    with pytest.raises(ValidationError) as caught:
        JobSpec.model_validate({"dataset_id": "d", **fields})
    error = caught.value.errors()[0]
    return error["loc"], error["type"]


@pytest.mark.parametrize(
    ("fields", "loc", "kind"),
    [
        ({"epochs": True}, ("epochs",), "int_type"),
        ({"epochs": "5"}, ("epochs",), "int_type"),
        ({"epochs": 5.0}, ("epochs",), "int_type"),
        ({"seed": False}, ("seed",), "int_type"),
        ({"model": {"image_size": 32.0}}, ("model", "image_size"), "int_type"),
        ({"optim": {"lr": True}}, ("optim", "lr"), "float_type"),
        ({"optim": {"lr": "0.1"}}, ("optim", "lr"), "float_type"),
        ({"optim": {"milestones": [True]}}, ("optim", "milestones", 0), "float_type"),
        ({"augment": {"hflip": 1}}, ("augment", "hflip"), "bool_type"),
        ({"augment": {"scale": [True, 1.1]}}, ("augment", "scale", 0), "float_type"),
        ({"spec_version": True}, ("spec_version",), "value_error"),
    ],
)
def test_a_value_of_the_wrong_type_is_refused_naming_its_field(fields, loc, kind):
    assert _problem(**fields) == (loc, kind)


def test_integers_are_numbers_and_a_stored_spec_reads_back():
    spec = JobSpec.model_validate(
        {"dataset_id": "d", "optim": {"lr": 1}, "mixing": {"prob": 1}, "augment": {"scale": [1, 2]}}
    )
    assert (spec.optim.lr, spec.mixing.prob, spec.augment.scale) == (1.0, 1.0, (1.0, 2.0))
    # A job row stores the spec as JSON (the pair becomes a list); the worker validates it again.
    assert JobSpec.model_validate(spec.model_dump(mode="json")) == spec
    assert JobSpec.model_validate_json(spec.model_dump_json()) == spec
