"""Every point of the ``auto`` space is a valid job spec, whatever combination TPE samples."""

from __future__ import annotations

import itertools

import pytest

from service.experiments.auto import auto_space
from service.experiments.space import apply, check_trial
from service.experiments.spec import ExperimentRequest, Range
from service.models import Dataset


def _dataset(*, train: int, ratio: float, size: int = 28) -> Dataset:
    return Dataset(splits={"train": {"count": train}}, image_shape=[size, size, 1], imbalance_ratio=ratio)


@pytest.mark.parametrize(("train", "ratio"), [(500, 50.0), (5_000, 10.0), (30_000, 1.0)])
def test_every_combination_of_the_auto_space_validates_as_a_job_spec(train, ratio):
    request = ExperimentRequest.model_validate({"dataset_id": "d", "search": {"strategy": "auto"}})
    base, space, _ = auto_space(request, dataset=_dataset(train=train, ratio=ratio))
    ends = {key: [dim.low, dim.high] if isinstance(dim, Range) else list(dim) for key, dim in space.items()}
    for combination in itertools.product(*ends.values()):
        params = dict(zip(ends, combination, strict=True))
        body = apply(base, params, dataset_id="d", seed=0)
        spec, problems = check_trial(body, params=params, extra_checks=lambda _spec: [])
        assert spec is not None and problems == [], (params, problems)


def test_an_imbalanced_set_searches_the_study_winners_and_a_balanced_one_does_not():
    request = ExperimentRequest.model_validate({"dataset_id": "d", "search": {"strategy": "auto"}})
    _, imbalanced, _ = auto_space(request, dataset=_dataset(train=500, ratio=50.0))
    assert {"ldam", "balanced_softmax"} <= set(imbalanced["loss.type"])
    assert "balanced_mixup" in imbalanced["mixing.mode"]
    _, balanced, _ = auto_space(request, dataset=_dataset(train=500, ratio=1.0))
    assert balanced["loss.type"] == ["cross_entropy", "focal"] and "balanced_mixup" not in balanced["mixing.mode"]


def test_a_field_the_base_sets_leaves_the_space_however_it_is_nested():
    body = {"dataset_id": "d", "search": {"strategy": "auto"}, "base": {"model": {"arch": "simple_cnn"}, "epochs": 5}}
    request = ExperimentRequest.model_validate(body)
    base, space, _ = auto_space(request, dataset=_dataset(train=5_000, ratio=10.0))
    assert base["model"] == {"arch": "simple_cnn"} and base["epochs"] == 5
    assert "model.arch" not in space  # a trial would otherwise train a ResNet the base ruled out
    assert {"loss.type", "optim.lr", "sampler.type"} <= set(space)
    request = ExperimentRequest.model_validate({**body, "base": {"loss": {"gamma": 2.0}}})
    _, space, _ = auto_space(request, dataset=_dataset(train=5_000, ratio=10.0))
    assert "loss.gamma" not in space and "loss.type" in space  # only the field set, not its siblings
