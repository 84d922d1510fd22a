"""Dataset-aware single-job defaults: what a spec leaves unset is chosen from the dataset.

The spec's own defaults (``service.spec``) are the recipe benchmarked on
PneumoniaMNIST (ResNet-18, class-balanced sampler, cross-entropy). On small
sets of small images it loses where its sampler repeats a few distinct images
of a class many times an epoch until they are memorised: with several classes
(issue 11's 5-class set of ~1,000 28×28 colour images, a small long-tailed
CIFAR-10 subset) and with a few-shot class; a binary set's minority of a few
dozen images or more is not repeated enough for that, and there ResNet-18's
capacity wins (RESULTS.md, "Experiments", has the measurements). So for fewer
than ``SMALL_TRAIN`` training images of at most ``SMALL_SIDE`` px that have
more than two classes or a few-shot class (fewer than ``FEW_SHOT`` images: the
few-shot line of the long-tail literature, Liu et al. 2019's ImageNet-LT
split), fields the client did not set become:

- ``model.arch`` → ``resnet32`` (He et al.'s CIFAR ResNet, the network of the
  long-tail literature at this image size: ResNet-18 with a balanced sampler
  over-fits a few-shot class, while ``simple_cnn`` ranks PneumoniaMNIST
  subsamples below the old recipe);
- ``sampler.type`` → ``random`` (re-sampling a tiny minority repeats a handful
  of images until they are memorised);
- ``loss.type`` → ``balanced_softmax`` (Ren et al. 2020: the class prior moves
  into the loss instead of the sampler, so a 5-image class is still predicted;
  focal loss with a random sampler left such a class at zero recall on
  long-tailed CIFAR-10).

The recipe was chosen by ``benchmarks/defaults_study.py`` against the one it
replaces; RESULTS.md ("Experiments") lists what was tried, why this one, and
what it was judged on. Other datasets keep the benchmarked recipe. A field the
client set is never changed; the job's stored spec shows what was chosen, and
``notes`` say why.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from service.models import Dataset
from service.spec import JobSpec

SMALL_TRAIN = 2_000
SMALL_SIDE = 64
FEW_SHOT = 20
SMALL_RECIPE = {
    ("model", "arch"): "resnet32",
    ("sampler", "type"): "random",
    ("loss", "type"): "balanced_softmax",
}


def is_small(dataset: Dataset) -> bool:
    side = max(int(dataset.image_shape[0]), int(dataset.image_shape[1]))
    train = dataset.splits["train"]
    several_classes = int(dataset.num_classes) > 2
    return (
        int(train["count"]) < SMALL_TRAIN
        and side <= SMALL_SIDE
        and (several_classes or _smallest_class(train) < FEW_SHOT)
    )


def _smallest_class(train: dict[str, Any]) -> int:
    return min(int(n) for n in train["class_counts"])  # ingest rejects a class with no train images


def with_dataset_defaults(spec: JobSpec, *, dataset: Dataset) -> tuple[JobSpec, list[str]]:
    """``spec`` with its unset fields chosen for ``dataset``, and a note per change."""
    if not is_small(dataset):
        return spec, []
    body = spec.model_dump(mode="json")
    reason, notes = _described(dataset), []
    for (part, name), value in SMALL_RECIPE.items():
        if _was_set(spec, part, name) or body[part][name] == value:
            continue
        if (part, name) == ("loss", "type") and not _nothing_else_rebalances(body):
            continue  # the prior in the loss on top of a client's sampler or weights would count it twice
        body[part][name] = value
        notes.append(f"{part}.{name} = {value!r}: {reason}")
    return (JobSpec.model_validate(body), notes) if notes else (spec, [])


def _described(dataset: Dataset) -> str:
    train = dataset.splits["train"]
    return (
        f"{train['count']} small training images in {dataset.num_classes} classes,"
        f" the smallest {_smallest_class(train)}"
    )


def _nothing_else_rebalances(body: dict[str, Any]) -> bool:
    return body["sampler"]["type"] == "random" and body["loss"]["class_weights"] == "none"


def _was_set(spec: JobSpec, part: str, name: str) -> bool:
    child: Any = getattr(spec, part)
    return part in spec.model_fields_set and isinstance(child, BaseModel) and name in child.model_fields_set
