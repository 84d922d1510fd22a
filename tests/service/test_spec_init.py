"""``model.init``: validated by the spec's pattern, parsed once (``ModelSpec.init_source``)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from service.spec import InitSource, JobSpec

JOB_ID = "0123456789abcdef0123456789abcdef"


def spec(init: str | None) -> JobSpec:
    return JobSpec.model_validate({"dataset_id": "d1", "model": {"init": init}})


@pytest.mark.parametrize(
    ("init", "parsed"),
    [
        (None, None),
        (f"job:{JOB_ID}", InitSource(kind="job", name=JOB_ID)),
        ("weights:resnet18-imagenet.safetensors", InitSource(kind="weights", name="resnet18-imagenet.safetensors")),
    ],
)
def test_init_source_names_the_kind_and_the_name(init: str | None, parsed: InitSource | None) -> None:
    assert spec(init).model.init_source == parsed


@pytest.mark.parametrize(
    "init", ["job:short", "weights:../etc/passwd", "weights:.hidden", "weights:a:b", "other:x", "job:"]
)
def test_an_init_outside_the_two_forms_is_refused(init: str) -> None:
    with pytest.raises(ValidationError, match="init"):
        spec(init)
