"""Dataset-aware single-job defaults: what a spec leaves unset is chosen from the dataset.

The spec's own defaults (``service.spec``) are the recipe benchmarked on
PneumoniaMNIST (ResNet-18, class-balanced sampler, cross-entropy). On small
sets of small images with a small class that recipe loses: on a held-out
binary medical set of a few hundred 28×28 images and a 5-class set of ~1,000
28×28 colour images (issue 11), a small network with a random sampler beat it
in a tenth of the time, while ResNet-18 with a balanced sampler reached a
minority recall of 0.10. So for fewer than ``SMALL_TRAIN`` training images of
at most ``SMALL_SIDE`` px whose smallest class has fewer than ``SMALL_CLASS``
of them, fields the client did not set become:

- ``model.arch`` → ``resnet32`` (He et al.'s CIFAR ResNet, the network of the
  long-tail literature at this image size: ResNet-18 over-fits a few hundred
  images, while ``simple_cnn`` ranks PneumoniaMNIST subsamples below the old
  recipe);
- ``sampler.type`` → ``random`` (re-sampling a tiny minority repeats a handful
  of images until they are memorised);
- ``loss.type`` → ``balanced_softmax`` (Ren et al. 2020: the class prior moves
  into the loss instead of the sampler, so a 5-image class is still predicted;
  focal loss with a random sampler left such a class at zero recall on
  long-tailed CIFAR-10).

The smallest class is the variable, not only the total: the balanced sampler
hurts by repeating few distinct images, and with ~500 images in every class
(1,950 PneumoniaMNIST images at their natural ratio) the old recipe was ahead
at the operating point. The recipe was chosen by
``benchmarks/defaults_study.py`` against the one it replaces; RESULTS.md
("Experiments") lists what was tried, why this one, and what it was judged on.
Other datasets keep the benchmarked recipe. A field the client set is never
changed; the job's stored spec shows what was chosen, and ``notes`` say why.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from service.models import Dataset
from service.spec import JobSpec

SMALL_TRAIN = 2_000
SMALL_SIDE = 64
SMALL_CLASS = 200
SMALL_RECIPE = {
    ("model", "arch"): "resnet32",
    ("sampler", "type"): "random",
    ("loss", "type"): "balanced_softmax",
}


def is_small(dataset: Dataset) -> bool:
    side = max(int(dataset.image_shape[0]), int(dataset.image_shape[1]))
    train = dataset.splits["train"]
    return int(train["count"]) < SMALL_TRAIN and side <= SMALL_SIDE and _smallest_class(train) < SMALL_CLASS


def _smallest_class(train: dict[str, Any]) -> int:
    return min(int(n) for n in train["class_counts"])  # ingest rejects a class with no train images


def with_dataset_defaults(spec: JobSpec, *, dataset: Dataset) -> tuple[JobSpec, list[str]]:
    """``spec`` with its unset fields chosen for ``dataset``, and a note per change."""
    if not is_small(dataset):
        return spec, []
    body = spec.model_dump(mode="json")
    notes = []
    for (part, name), value in SMALL_RECIPE.items():
        if _was_set(spec, part, name) or body[part][name] == value:
            continue
        if (part, name) == ("loss", "type") and not _nothing_else_rebalances(body):
            continue  # the prior in the loss on top of a client's sampler or weights would count it twice
        body[part][name] = value
        notes.append(f"{part}.{name} = {value!r}: {_described(dataset)}")
    return (JobSpec.model_validate(body), notes) if notes else (spec, [])


def _described(dataset: Dataset) -> str:
    train = dataset.splits["train"]
    return f"{train['count']} small training images, the smallest class {_smallest_class(train)}"


def _nothing_else_rebalances(body: dict[str, Any]) -> bool:
    return body["sampler"]["type"] == "random" and body["loss"]["class_weights"] == "none"


def _was_set(spec: JobSpec, part: str, name: str) -> bool:
    child: Any = getattr(spec, part)
    return part in spec.model_fields_set and isinstance(child, BaseModel) and name in child.model_fields_set
