"""The defaults study compares the right two recipes: JobSpec's own defaults against what service.defaults
makes of them, and marks a dataset the rule leaves alone as one recipe (no training here); it reuses a
published old-recipe column only while the code that trained it is unchanged."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

from benchmarks import common
from benchmarks.defaults_reuse import ReusedOld, reused_old
from benchmarks.defaults_study import COLUMNS, GROUPS, Case, recipes


def _case(train: int, side: int, *, smallest: int = 10, classes: int = 2) -> Case:
    """``smallest`` images of class 0, the rest spread over the other classes."""
    labels = np.where(np.arange(train) < smallest, 0, 1 + np.arange(train) % (classes - 1))
    images = np.zeros((train, side, side, 1), dtype=np.uint8)
    split = (images[:4], labels[:4])
    return Case("synthetic", {"train": (images, labels), "val": split, "test": split}, list("abcde"[:classes]))


def test_a_small_set_compares_the_replaced_recipe_with_the_small_data_defaults() -> None:
    old, new, notes = recipes(_case(500, 28), epochs=None)
    assert (old["model"]["arch"], old["sampler"]["type"], old["loss"]["type"], old["epochs"]) == (
        "resnet18",
        "weighted",
        "cross_entropy",
        40,
    )
    assert (new["model"]["arch"], new["sampler"]["type"], new["loss"]["type"], new["epochs"]) == (
        "resnet32",
        "random",
        "balanced_softmax",
        40,
    )
    assert {k: v for k, v in old.items() if k not in ("model", "sampler", "loss")} == {
        k: v for k, v in new.items() if k not in ("model", "sampler", "loss")
    }
    assert len(notes) == 3


def test_a_set_at_the_size_line_or_of_large_images_or_binary_without_a_few_shot_class_keeps_the_old_recipe() -> None:
    for train, side, smallest in ((2000, 28, 10), (500, 96, 10), (1950, 28, 20), (500, 28, 250)):
        old, new, notes = recipes(_case(train, side, smallest=smallest), epochs=3)
        assert old == new and notes == [] and old["epochs"] == 3
    _, new, notes = recipes(_case(1950, 28, smallest=19), epochs=3)
    assert new["loss"]["type"] == "balanced_softmax"
    assert notes[0].endswith("1950 small training images in 2 classes, the smallest 19")
    _, new, _ = recipes(_case(1000, 28, smallest=200, classes=5), epochs=3)  # several classes: no few-shot class needed
    assert new["model"]["arch"] == "resnet32"


def test_the_groups_cover_every_size_and_ratio_and_the_cifar_cases() -> None:
    assert len(GROUPS["pneumonia"]) == 9 and "pneumonia-1950-1:50" in GROUPS["pneumonia"]
    assert GROUPS["cifar"] == ("cifar10", "cifar10-lt", "cifar10-lt-small")
    assert GROUPS["cifar10-lt-small"] == ("cifar10-lt-small",) and GROUPS["pneumonia-1950-natural"] == (
        "pneumonia-1950-natural",
    )
    assert GROUPS["held-out"] == ("pneumonia-1000-1:100",) and "pneumonia-1000-1:100" not in GROUPS["pneumonia"]


def _published(tmp_path: Path, *, commit: str, extra: str = "") -> Path:
    headers = ["case", "train images", "new defaults change"]
    for _, label in COLUMNS:
        headers += [f"{label} old", f"{label} new"]
    headers.append("s per run old / new")
    row = ["pneumonia-500-natural", "500", "model.arch=resnet32", *["0.900 ± 0.010", "0.800 ± 0.020"] * 4, "512 / 9"]
    body = f"- commit: `{commit}`\n\n{RUNS}; mean ± sample std.\n\n{common.markdown_table(headers, [row])}\n{extra}"
    results = tmp_path / "RESULTS.md"
    common.write_results("defaults-study-x-cpu", body, "python -m benchmarks.defaults_study", path=results)
    return results


RUNS = "Seeds [0, 1, 2], epochs the recipes' own 40"


def _reuse(results: Path, case: str = "pneumonia-500-natural", runs: str = RUNS) -> ReusedOld | None:
    return reused_old(case, sections=["missing", "defaults-study-x-cpu"], columns=COLUMNS, runs=runs, results=results)


def test_old_columns_are_reused_from_a_section_measured_at_unchanged_code(tmp_path: Path) -> None:
    head = common.commit()
    reused = _reuse(_published(tmp_path, commit=head))
    assert reused is not None and reused.commit == head and reused.seconds == 512.0
    assert reused.stats == {key: (0.9, 0.01) for key, _ in COLUMNS}
    assert reused.where.endswith(common.machine_line()) and reused.line("c").startswith("- c: old-recipe columns")
    # Not for another case, nor for other seeds or epochs.
    assert _reuse(_published(tmp_path, commit=head), case="cifar10") is None
    assert _reuse(_published(tmp_path, commit=head), runs="Seeds [0], epochs 1") is None


def test_a_reused_sections_own_attribution_travels_on(tmp_path: Path) -> None:
    earlier = "- pneumonia-500-natural: old-recipe columns measured 2026-12-02 19:37 UTC on AMD EPYC at commit `{c}`"
    results = _published(tmp_path, commit="0000000", extra=earlier.format(c=common.commit()))
    reused = _reuse(results)
    assert reused is not None and reused.where == "2026-12-02 19:37 UTC on AMD EPYC"


def test_old_columns_measured_at_other_code_or_an_unknown_commit_are_refused(tmp_path: Path) -> None:
    root = subprocess.run(
        ["git", "rev-list", "--max-parents=0", "HEAD"], cwd=common.REPO_ROOT, capture_output=True, text=True
    ).stdout.split()[0][:7]
    if root == common.commit():
        pytest.skip("a one-commit clone holds no earlier code to compare with")
    with pytest.raises(ValueError, match="old recipe's code changed since"):
        _reuse(_published(tmp_path, commit=root))
    with pytest.raises(ValueError, match="cannot compare"):
        _reuse(_published(tmp_path, commit="abcdef0"))
