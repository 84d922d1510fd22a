"""The dataset-aware single-job defaults against the one recipe they replaced (issue 11).

A spec holding only ``dataset_id`` gets its unset fields from the dataset
(``service.defaults.with_dataset_defaults``, the code ``POST /v1/jobs`` runs):
that is the **new** recipe. The **old** recipe is the same spec without that
step: ``JobSpec``'s own defaults, the single recipe tuned on PneumoniaMNIST
(ResNet-18, class-balanced sampler, cross-entropy, 40 epochs, AdamW + cosine,
model selected by val AUROC). Both run through the job path
(``benchmarks.techniques.run_technique``: JobSpec → plan → ``fit``), once per
seed, and are compared on test.

Cases (val and test are never subsampled):

- PneumoniaMNIST train subsampled to 500 and 1,950 images (just under the
  2,000-image line of ``service.defaults``, which on a binary set also asks
  for a class of fewer than 20 images) and all 4,708, each as is (normal :
  pneumonia ≈ 1:2.9) and with the normal class cut to 1:10 and 1:50
  (``benchmarks.imbalance.subsample_minority``, then the size subsample, both
  seed 0);
- CIFAR-10 (45,000 train, a val split of 500 unused train images per class,
  the 10,000 test images), CIFAR-10-LT ρ = 100 (12,306 train images of the 45,000,
  ``benchmarks.techniques.load_cifar_lt``) and a small long-tailed subset
  (500 images for the head class, ρ = 100: 1,236 train images).
- held-out (``--group held-out``): PneumoniaMNIST cut to 1:100 and subsampled
  to 1,000 images, a size and a ratio no version of the rule was chosen on.

A case where the new defaults pick the old recipe (the resolved specs are
equal) is not trained: the two rows are one recipe, so the new one cannot be
below it. **Verdict** per metric: the new defaults are *below by more than the
seed spread* when ``mean_old − mean_new > std_old + std_new`` (sample
standard deviations over the seeds; the summed-spread rule,
``benchmarks.imbalance.margin_and_spread``).

    python -m benchmarks.defaults_study --device cuda --seeds 0 1 2
    python -m benchmarks.defaults_study --device cuda --group cifar
    python -m benchmarks.defaults_study --group cifar10-lt-small   # one case
    python -m benchmarks.defaults_study --group pneumonia --reuse-old defaults-study-pneumonia-cpu
    python -m benchmarks.defaults_study --group held-out   # a case no rule was chosen on
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks import common, imbalance, techniques
from benchmarks.defaults_reuse import ReusedOld, reused_old
from benchmarks.medmnist import with_epochs
from service.defaults import with_dataset_defaults
from service.models import Dataset
from service.spec import JobSpec

logger = logging.getLogger(__name__)

_DATA_CANDIDATES = (common.REPO_ROOT.parent / "shared" / "data", Path("/work/shared/data"))
DEFAULT_DATA = next((p for p in _DATA_CANDIDATES if p.is_dir()), _DATA_CANDIDATES[0])
PNEUMONIA_SIZES: dict[str, int | None] = {"500": 500, "1000": 1000, "1950": 1950, "all": None}
PNEUMONIA_RATIOS: dict[str, int | None] = {"natural": None, "1:10": 10, "1:50": 50, "1:100": 100}
GRID_SIZES, GRID_RATIOS = ("500", "1950", "all"), ("natural", "1:10", "1:50")  # the grid
PNEUMONIA_CASES = tuple(f"pneumonia-{size}-{ratio}" for size in GRID_SIZES for ratio in GRID_RATIOS)
# Judges the rule on a size and a ratio it was not chosen on (named before it ran).
HELD_OUT_CASES = ("pneumonia-1000-1:100",)
CIFAR_CASES = ("cifar10", "cifar10-lt", "cifar10-lt-small")
GROUPS = {
    "pneumonia": PNEUMONIA_CASES,
    **{f"pneumonia-{size}": tuple(c for c in PNEUMONIA_CASES if c.split("-")[1] == size) for size in GRID_SIZES},
    "cifar": CIFAR_CASES,
    "held-out": HELD_OUT_CASES,
    "quick": ("pneumonia-500-1:10",),
    # One case alone: a 2-core CPU session fits one slow case, not a whole group.
    **{name: (name,) for name in (*PNEUMONIA_CASES, *HELD_OUT_CASES, *CIFAR_CASES)},
}
CIFAR_VAL_PER_CLASS = 500
SAME_RECIPE = "same recipe (not run)"
SMALL_LT_HEAD = 500
QUICK_SIZES = {"train": 128, "val": 32, "test": 64}
COLUMNS = (
    ("auc", "test AUROC"),
    ("acc", "accuracy"),
    ("balanced_accuracy", "balanced acc"),
    ("minority_recall", "minority recall"),
)


@dataclass(frozen=True)
class Case:
    name: str
    arrays: common.Arrays
    class_names: list[str]


def pneumonia_case(name: str, *, data: Path, quick: bool) -> Case:
    """``pneumonia-{size}-{ratio}``: the minority cut first, then the train subsample (val/test untouched)."""
    _, size, ratio = name.split("-", 2)
    arrays, names = common.load_npz(data / "pneumoniamnist.npz")
    cut = PNEUMONIA_RATIOS[ratio]
    if cut is not None:
        arrays = imbalance.subsample_minority(arrays, ratio=cut)
    train = PNEUMONIA_SIZES[size]
    if quick:
        return Case(name, common.subset(arrays, sizes=QUICK_SIZES), names)
    return Case(name, arrays if train is None else common.subset(arrays, sizes={"train": train}), names)


def cifar10(path: Path) -> tuple[common.Arrays, list[str]]:
    """CIFAR-10 with a balanced val split of unused train images (the last 500 of a seed-0 shuffle per class)."""
    arrays, names = techniques.load_cifar_lt(path, rho=1, val_per_class=0)
    images, labels = arrays["train"]
    order = np.random.default_rng(0).permutation(len(labels))
    val = np.concatenate([order[labels[order] == c][-CIFAR_VAL_PER_CLASS:] for c in range(len(names))])
    train = np.setdiff1d(np.arange(len(labels)), val)
    return {"train": (images[train], labels[train]), "val": (images[val], labels[val]), "test": arrays["test"]}, names


def cifar_case(name: str, *, data: Path) -> Case:
    path = data / "cifar10-jpeg.zip"
    if name == "cifar10":
        arrays, names = cifar10(path)
    elif name == "cifar10-lt":
        arrays, names = techniques.load_cifar_lt(path)
    else:
        arrays, names = techniques.load_cifar_lt(path, head=SMALL_LT_HEAD)
    return Case(name, arrays, names)


def dataset_row(case: Case) -> Dataset:
    """The dataset as ``service.defaults`` reads it (what ingest records: train count, image shape)."""
    images, labels = case.arrays["train"]
    counts = np.bincount(labels, minlength=len(case.class_names)).tolist()
    return Dataset(
        num_classes=len(case.class_names),
        class_names=case.class_names,
        image_shape=[int(images.shape[1]), int(images.shape[2]), int(images.shape[3])],
        splits={"train": {"count": int(len(labels)), "class_counts": counts}},
        imbalance_ratio=max(counts) / max(1, min(counts)),
    )


def recipes(case: Case, *, epochs: int | None) -> tuple[dict[str, Any], dict[str, Any], list[str]]:
    """``(old, new, notes)``: the spec of a body with only ``dataset_id``, without and with the defaults step."""
    old = JobSpec.model_validate({"dataset_id": common.BENCH_DATASET_ID})
    new, notes = with_dataset_defaults(old, dataset=dataset_row(case))
    strip = {"dataset_id", "seed"}
    as_overrides = [with_epochs(spec.model_dump(mode="json", exclude=strip), epochs) for spec in (old, new)]
    return as_overrides[0], as_overrides[1], notes


def study_case(
    case: Case, *, seeds: Sequence[int], epochs: int | None, device: torch.device, reused: ReusedOld | None
) -> tuple[list[object], list[str]]:
    """One table row and the verdict lines of one case (the old recipe not trained where ``reused`` has it)."""
    old, new, notes = recipes(case, epochs=epochs)
    counts = np.bincount(case.arrays["train"][1], minlength=len(case.class_names)).tolist()
    shape = "×".join(str(d) for d in case.arrays["train"][0].shape[1:3])
    described = [case.name, f"{sum(counts)} ({shape} px, {max(counts) / max(1, min(counts)):.1f}:1)"]
    if old == new:
        return [*described, SAME_RECIPE, *["—"] * (len(COLUMNS) * 2 + 1)], []
    specs = {"new": new} if reused else {"new": new, "old": old}
    stats, seconds = {}, {}
    for label, spec in specs.items():
        runs = []
        for seed in seeds:
            row = techniques.run_technique(
                {**spec, "seed": seed}, arrays=case.arrays, class_names=case.class_names, device=device
            )
            logger.info("%s: %s recipe, seed %d: %s", case.name, label, seed, row)
            runs.append(row)
        stats[label] = {key: common.mean_std([r[key] for r in runs]) for key, _ in COLUMNS}
        seconds[label] = sum(r["seconds"] for r in runs) / len(seeds)
    if reused:
        stats["old"], seconds["old"] = reused.stats, reused.seconds
    cells, verdicts = [], []
    for key, label in COLUMNS:
        (m_old, s_old), (m_new, s_new) = pair = stats["old"][key], stats["new"][key]
        cells += [f"{m_old:.3f} ± {s_old:.3f}", f"{m_new:.3f} ± {s_new:.3f}"]
        margin, spread = imbalance.margin_and_spread(*pair)
        if margin > spread:
            verdicts.append(f"- {case.name}: new {label} {m_new:.3f} is below old {m_old:.3f} beyond the spread.")
    changes = ", ".join(note.split(":")[0].replace(" = ", "=").replace("'", "") for note in notes)
    return [*described, changes, *cells, f"{seconds['old']:.0f} / {seconds['new']:.0f}"], verdicts


def run_study(args: argparse.Namespace, device: torch.device) -> str:
    epochs = "the recipes' own 40" if args.epochs is None else str(args.epochs)
    runs = f"Seeds {list(args.seeds)}, epochs {epochs}"
    rows, reuse, verdicts = [], [], []
    for name in GROUPS[args.group]:
        if name in CIFAR_CASES:
            case = cifar_case(name, data=args.data)
        else:
            case = pneumonia_case(name, data=args.data, quick=args.quick)
        reused = reused_old(
            name, sections=args.reuse_old, columns=COLUMNS, runs=runs, results=args.results or common.RESULTS_PATH
        )
        row, case_verdicts = study_case(case, seeds=args.seeds, epochs=args.epochs, device=device, reused=reused)
        rows.append(row)
        reuse += [reused.line(name)] if reused and row[2] != SAME_RECIPE else []
        verdicts += case_verdicts
    headers = ["case", "train images", "new defaults change"]
    for _, label in COLUMNS:
        headers += [f"{label} old", f"{label} new"]
    headers.append("s per run old / new")
    verdicts = verdicts or [
        "The new defaults are never below the old recipe by more than the seed spread (summed std) here."
    ]
    return (
        f"- commit: `{common.commit()}`\n\n"
        f"Old recipe: `JobSpec` defaults (ResNet-18, class-balanced sampler, cross-entropy, 40 epochs); new: the "
        f"same spec after `service.defaults`. {runs}; mean ± sample std on test "
        "(every subsample cuts train only).\n\n"
        + common.markdown_table(headers, rows)
        + "".join("\n\n" + "\n".join(block) for block in (reuse, verdicts) if block)
    )


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--quick", action="store_true", help="seconds-long smoke run (CI); no RESULTS write")
    parser.add_argument(
        "--data", type=Path, default=DEFAULT_DATA, help="folder with pneumoniamnist.npz and cifar10-jpeg.zip"
    )
    parser.add_argument("--results", type=Path, default=None, help="results file (default benchmarks/RESULTS.md)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--group", choices=tuple(GROUPS), default="pneumonia", help="the cases to run")
    parser.add_argument("--epochs", type=int, default=None, help="override both recipes' epochs")
    parser.add_argument(
        "--reuse-old",
        nargs="+",
        default=[],
        metavar="SECTION",
        help="take a case's old-recipe columns from these published sections (benchmarks.defaults_reuse)",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.group, args.seeds, args.epochs = "quick", args.seeds[:1], 1
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args, device, argv = common.start(parse_args, argv)
    markdown = run_study(args, device)
    common.publish(
        # A ratio group such as pneumonia-1950-1:50 names its section with "to" (section names have no ':').
        f"defaults-study-{args.group.replace(':', 'to')}-{common.machine_tag(device)}",
        markdown,
        args=args,
        module="benchmarks.defaults_study",
        argv=argv,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
