"""The defaults study compares the right two recipes: JobSpec's own defaults against what service.defaults
makes of them, and marks a dataset the rule leaves alone as one recipe (no training here)."""

from __future__ import annotations

import numpy as np

from benchmarks.defaults_study import GROUPS, Case, recipes


def _case(train: int, side: int) -> Case:
    labels = np.arange(train) % 2
    images = np.zeros((train, side, side, 1), dtype=np.uint8)
    split = (images[:4], labels[:4])
    return Case("synthetic", {"train": (images, labels), "val": split, "test": split}, ["a", "b"])


def test_a_small_set_compares_the_replaced_recipe_with_the_small_data_defaults() -> None:
    old, new, notes = recipes(_case(500, 28), epochs=None)
    assert (old["model"]["arch"], old["sampler"]["type"], old["loss"]["type"], old["epochs"]) == (
        "resnet18",
        "weighted",
        "cross_entropy",
        40,
    )
    assert (new["model"]["arch"], new["sampler"]["type"], new["loss"]["type"], new["epochs"]) == (
        "simple_cnn",
        "random",
        "focal",
        40,
    )
    assert {k: v for k, v in old.items() if k not in ("model", "sampler", "loss")} == {
        k: v for k, v in new.items() if k not in ("model", "sampler", "loss")
    }
    assert len(notes) == 3


def test_a_set_at_the_size_line_or_of_large_images_keeps_the_old_recipe() -> None:
    for train, side in ((2000, 28), (500, 96)):
        old, new, notes = recipes(_case(train, side), epochs=3)
        assert old == new and notes == [] and old["epochs"] == 3


def test_the_groups_cover_every_size_and_ratio_and_the_cifar_cases() -> None:
    assert len(GROUPS["pneumonia"]) == 9 and "pneumonia-1950-1:50" in GROUPS["pneumonia"]
    assert GROUPS["cifar"] == ("cifar10", "cifar10-lt", "cifar10-lt-small")
    assert GROUPS["cifar10-lt-small"] == ("cifar10-lt-small",) and GROUPS["pneumonia-1950-natural"] == (
        "pneumonia-1950-natural",
    )
