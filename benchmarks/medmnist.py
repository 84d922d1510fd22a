"""PneumoniaMNIST through the job path, against the MedMNIST v2 reference rows (Yang et al., Sci. Data 2023).

Every run is JobSpec → ``workers.lifecycle.plan.build_training`` → ``fit``; a recipe is a
dict of JobSpec overrides (:data:`RECIPES`). Test metrics are computed here
(``benchmarks.metrics``) from the selected model's probabilities with the
decision rule the served model applies (the tuned threshold if the recipe has
one, else argmax). The minority class is the train split's rarest (0, normal).

``--imbalanced`` (``benchmarks.imbalance``) subsamples the train split's
normal class to 1:10 and compares imbalance strategies over several seeds.

    python -m benchmarks.medmnist --recipe medmnist_resnet18_28 --device cuda
    python -m benchmarks.medmnist --recipe rarefit_default --device cuda
    python -m benchmarks.medmnist --imbalanced --device cuda
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from benchmarks import common, imbalance
from benchmarks.metrics import METRIC_COLUMNS, predict_probs, summary

logger = logging.getLogger(__name__)

_NO_AUGMENT = {"hflip": False, "vflip": False, "rotation": 0.0, "scale": None, "translate": 0.0}
RECIPES: dict[str, dict[str, Any]] = {
    # MedMNIST v2's training recipe: Adam 1e-3, ×0.1 at 50 % and 75 % of 100 epochs, batch 128,
    # cross-entropy, no augmentation, model selected by validation AUC, argmax decisions.
    "medmnist_resnet18_28": {
        "model": {"arch": "resnet18"},
        "loss": {"type": "cross_entropy"},
        "mixing": {"mode": "none"},
        "sampler": {"type": "random"},
        "augment": _NO_AUGMENT,
        "optim": {
            "name": "adam",
            "lr": 1e-3,
            "weight_decay": 0.0,
            "scheduler": "step",
            "milestones": [0.5, 0.75],
            "step_gamma": 0.1,
            "warmup_epochs": 0,
        },
        "epochs": 100,
        "batch_size": 128,
        "selection_metric": "auroc",
        "threshold": {"strategy": "none"},
    },
    # rarefit's proposed default for small grey-scale medical images: AdamW + warm-up + cosine,
    # light geometric augmentation, class-balanced sampling, selection by validation AUC.
    "rarefit_default": {
        "model": {"arch": "resnet18"},
        "loss": {"type": "cross_entropy", "label_smoothing": 0.0},
        "mixing": {"mode": "none"},
        "sampler": {"type": "weighted"},
        "augment": {"hflip": True, "vflip": False, "rotation": 10.0, "scale": [0.9, 1.1], "translate": 0.05},
        "optim": {"name": "adamw", "lr": 1e-3, "weight_decay": 5e-4, "scheduler": "cosine", "warmup_epochs": 2},
        "epochs": 40,
        "batch_size": 128,
        "selection_metric": "auroc",
        "threshold": {"strategy": "none"},
    },
}
# MedMNIST v2, Table 3, PneumoniaMNIST: (test AUC, test ACC).
REFERENCE_ROWS: tuple[tuple[str, float, float], ...] = (
    ("ResNet-18 (28)", 0.944, 0.854),
    ("ResNet-18 (224)", 0.956, 0.864),
    ("ResNet-50 (224)", 0.962, 0.884),
    ("auto-sklearn", 0.942, 0.855),
    ("AutoKeras", 0.947, 0.878),
    ("Google AutoML Vision", 0.991, 0.946),
)
QUICK_SIZES = {"train": 256, "val": 64, "test": 128}


def run_one(
    overrides: Mapping[str, Any], *, arrays: common.Arrays, class_names: Sequence[str], device: torch.device
) -> dict[str, float]:
    """Train one job spec and return its test summary plus best epoch and wall seconds."""
    from workers.training.engine import fit

    started = time.perf_counter()
    kwargs = common.job_fit_kwargs(overrides, arrays=arrays, class_names=class_names, device=device)
    result = fit(**kwargs)
    seconds = time.perf_counter() - started
    test_images, test_labels = arrays["test"]
    probs = predict_probs(result.model, test_images, device=device)
    minority = int(np.argmin(np.bincount(arrays["train"][1], minlength=len(class_names))))
    row = summary(
        probs, test_labels, threshold=result.threshold, positive_class=result.positive_class, minority=minority
    )
    return {**row, "best_epoch": float(result.best_epoch), "seconds": seconds}


def recipe_overrides(recipe: str, *, epochs: int | None, arch: str | None, seed: int) -> dict[str, Any]:
    if recipe not in RECIPES:
        raise ValueError(f"unknown recipe {recipe!r}; choose from {', '.join(RECIPES)}")
    extra: dict[str, Any] = {"seed": seed}
    if arch is not None:
        extra["model"] = {"arch": arch}
    return with_epochs(common.deep_merge(RECIPES[recipe], extra), epochs)


def with_epochs(spec: Mapping[str, Any], epochs: int | None) -> dict[str, Any]:
    """``spec`` with ``epochs`` replaced (None: unchanged); warm-up shortened to fit a shorter run."""
    if epochs is None:
        return dict(spec)
    warmup = int(spec.get("optim", {}).get("warmup_epochs", 0))
    return common.deep_merge(spec, {"epochs": epochs, "optim": {"warmup_epochs": min(warmup, max(0, epochs - 1))}})


def recipe_table(recipe: str, runs: list[tuple[int, dict[str, float]]]) -> str:
    keys = [key for key, _ in METRIC_COLUMNS]
    headers = ["run", *[label for _, label in METRIC_COLUMNS], "best epoch", "train s"]
    rows = [
        [f"seed {seed}", *[common.fmt(r[k]) for k in keys], int(r["best_epoch"]), common.fmt(r["seconds"], 0)]
        for seed, r in runs
    ]
    stats = {k: common.mean_std([r[k] for _, r in runs]) for k in keys}
    rows.append(
        [f"**mean ± std ({len(runs)} seeds)**", *[f"{stats[k][0]:.3f} ± {stats[k][1]:.3f}" for k in keys], "", ""]
    )
    auc, acc = stats["auc"][0], stats["acc"][0]
    reference = [
        [name, f"{ref_auc:.3f}", f"{ref_acc:.3f}", f"{auc - ref_auc:+.3f}", f"{acc - ref_acc:+.3f}"]
        for name, ref_auc, ref_acc in REFERENCE_ROWS
    ]
    best_resnet = max((r for r in REFERENCE_ROWS if r[0].startswith("ResNet")), key=lambda r: r[1])
    best = max(REFERENCE_ROWS, key=lambda r: r[1])
    return (
        f"Recipe `{recipe}`: `{json.dumps(RECIPES[recipe])}` (epochs/arch as in the command).\n\n"
        + common.markdown_table(headers, rows)
        + "\n\nMedMNIST v2 reference rows (PneumoniaMNIST test AUC / ACC) and our mean minus each:\n\n"
        + common.markdown_table(["reference", "AUC", "ACC", "Δ AUC (ours − ref)", "Δ ACC (ours − ref)"], reference)
        + f"\n\nDistance to the best ResNet row ({best_resnet[0]}): AUC {auc - best_resnet[1]:+.3f}, "
        f"ACC {acc - best_resnet[2]:+.3f}; to the best row overall ({best[0]}): AUC {auc - best[1]:+.3f}, "
        f"ACC {acc - best[2]:+.3f}. ACC uses the served decision rule (argmax unless the recipe tunes a threshold)."
    )


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = common.add_common_args(argparse.ArgumentParser(description=__doc__.split("\n")[0]))
    parser.add_argument("--recipe", choices=sorted(RECIPES), default="rarefit_default")
    parser.add_argument("--epochs", type=int, default=None, help="override the recipe's epochs")
    parser.add_argument("--arch", default=None, help="override the recipe's model.arch")
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="default 0 1 2 (--quick: 0 1)")
    parser.add_argument("--imbalanced", action="store_true", help="1:10 normal subsample, strategy comparison")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args, device, argv = common.start(parse_args, argv)
    arrays, class_names = common.load_npz(args.data)
    if args.quick:
        arrays = common.subset(arrays, sizes=QUICK_SIZES, seed=0)
    seeds = args.seeds or ([0, 1] if args.quick else [0, 1, 2])
    epochs = args.epochs if args.epochs is not None else (1 if args.quick else None)
    arch = args.arch or ("simple_cnn" if args.quick else None)
    tag = common.machine_tag(device)
    if args.imbalanced:
        markdown = imbalance.run(
            arrays=arrays,
            class_names=class_names,
            device=device,
            seeds=seeds,
            epochs=epochs,
            arch=arch,
            base=RECIPES["rarefit_default"],
            run_one=run_one,
            with_epochs=with_epochs,
        )
        section = f"imbalanced-{tag}"
    else:
        runs = []
        for seed in seeds:
            logger.info("recipe %s seed %d", args.recipe, seed)
            overrides = recipe_overrides(args.recipe, epochs=epochs, arch=arch, seed=seed)
            runs.append((seed, run_one(overrides, arrays=arrays, class_names=class_names, device=device)))
        markdown = recipe_table(args.recipe, runs)
        section = f"medmnist-{args.recipe.replace('_', '-')}-{tag}"
    common.publish(section, markdown, args=args, module="benchmarks.medmnist", argv=argv)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
